"""The Review page and the gallery corrections of Insights and Explore, under AppTest against a real run the browser
may change (a copy beside the protected default run): label an uploaded .zip, accept, correct, skip, accept all
above a level, add to the gallery and take it back; accept a suspect's suggestion; relabel a map selection."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from embedder.runs.run import load_run
from tests.helpers import copy_run, make_shapes_folder, open_app


@pytest.fixture
def mine(shapes_run, tmp_path, monkeypatch, no_job_outlives_its_test):
    """runs/base is the server's run (protected); runs/mine a copy the browser may change, made active."""
    runs = tmp_path / "runs"
    copy_run(shapes_run, runs / "base")
    copy_run(shapes_run, runs / "mine")
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    monkeypatch.setenv("EMBEDDER_RUN", str(runs / "base"))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    return runs / "mine"


def opened(page: str, run_dir):
    at = open_app()
    at.session_state["active_run"] = str(run_dir)
    return at.switch_page(page).run()


def new_images_zip(tmp_path) -> bytes:
    folder = make_shapes_folder(tmp_path / "new", per_class=4, seed=5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            zf.write(f, f"{f.parent.name}-{f.name}")  # no class folders
    return buf.getvalue()


def test_review__label_a_zip_decide_add_to_the_gallery_and_undo(mine, tmp_path):
    before = len(load_run(mine).gallery_paths)
    at = opened("pages/review.py", mine)
    at.file_uploader(key="review_zip").set_value(("new.zip", new_images_zip(tmp_path), "application/zip")).run()
    at.button(key="review_label").click().run()
    assert not at.exception and not at.error
    assert any("12 of 12 to review" in c.value for c in at.caption)
    at.button(key="review-accept").click().run()
    at.button(key="review-skip").click().run()
    at.button(key="review-undo").click().run()  # the skip is taken back
    at.button(key="review-skip").click().run()
    pick = next(s for s in at.selectbox if str(s.key).startswith("review-pick"))
    other = next(c for c in ("circle", "square", "triangle") if c != at.metric[0].value)
    pick.set_value(other).run()
    at.button(key="review-set").click().run()
    assert any("9 of 12 to review" in c.value for c in at.caption)
    at.button(key="review-add").click().run()
    assert not at.exception and not at.error
    (said,) = [s.value for s in at.success]
    assert said.startswith("added 2 images (") and said.endswith("): see them on Explore")
    grown = load_run(mine)
    assert len(grown.gallery_paths) == before + 2 and other in grown.label_names(grown.gallery_labels[-2:])
    at.button(key="review-gallery-undo").click().run()
    assert at.success[0].value.startswith("undone: took 2 out of the gallery")
    assert len(load_run(mine).gallery_paths) == before


def test_review__the_servers_own_run_cannot_be_changed(mine, tmp_path):
    at = opened("pages/review.py", mine.parent / "base")
    at.file_uploader(key="review_zip").set_value(("new.zip", new_images_zip(tmp_path), "application/zip")).run()
    at.button(key="review_label").click().run()
    at.button(key="review-accept").click().run()
    assert at.button(key="review-add").disabled  # labelling is fine; changing this run is not


def test_insights__accept_a_suspects_suggestion(mine):
    at = opened("pages/insights.py", mine)
    assert not at.exception
    accept = next((b for b in at.button if str(b.key).endswith("-accept") and str(b.key).startswith("suspect-")), None)
    if accept is None:
        pytest.skip("this run has no suspected mislabel")
    suggested = accept.label.removeprefix("Accept ")
    accept.click().run()
    assert not at.exception and not at.error and at.success[0].value.startswith("relabelled 1 image")
    run = load_run(mine)
    assert run.corrections.changes[0].label == suggested


def test_explore__relabel_a_selection(mine):
    from ui import maps

    at = opened("pages/explore.py", mine)
    at.session_state[maps.SELECTED] = np.array([0, 1, 2])
    at.run()
    at.selectbox(key="map-correct-label").set_value("square").run()
    at.button(key="map-correct-set").click().run()
    assert not at.exception and not at.error
    run = load_run(mine)
    assert run.label_names(run.gallery_labels[:3]) == ["square"] * 3
    assert maps.SELECTED not in at.session_state or not len(at.session_state[maps.SELECTED])
