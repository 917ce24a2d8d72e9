"""ui/adding.py on the Home page (AppTest): images from a shared folder or an uploaded .zip join the active run's
gallery, the summary and the run's numbers update, and a run the browser may not change is refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedder.runs.run import load_run
from tests.helpers import copy_run, open_app, zip_of


def stripes(folder, n: int, seed: int):
    """``n`` 32x32 striped images in ``folder``: a label the digits run has never seen."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        on = ((xx + yy + int(rng.integers(0, 8))) // 4) % 2 == 0
        Image.fromarray(np.where(on[..., None], 30, 240).astype(np.uint8).repeat(3, 2), "RGB").save(folder / f"{i}.png")
    return folder.parent


@pytest.fixture
def own_run(app_env, tmp_path, monkeypatch):
    """A copy of the digits run in a runs folder of this test's own: a run the browser may change."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    return copy_run(app_env, runs / "mine")


def home_on(run):
    at = open_app()
    at.session_state["active_run"] = str(run)
    return at.switch_page("pages/home.py").run()


def test_home__images_from_a_shared_folder_join_the_gallery(own_run, tmp_path):
    before = len(load_run(own_run).gallery_paths)
    folder = stripes(tmp_path / "more" / "stripes", 6, seed=0)
    at = home_on(own_run)
    at.radio(key="add_source").set_value("Folder on the server").run()
    at.text_input(key="add_folder").set_value(str(folder))
    at.button(key="add_submit").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == ["added 6 images (stripes 6 new)"]
    assert at.metric[0].value == f"{before + 6:,}" and at.metric[1].value == "11"  # gallery images, labels
    assert any("6 images were added after training, 1 of them new labels" in c.value for c in at.caption)
    assert load_run(own_run).classes[-1] == "stripes"


def test_home__an_uploaded_zip_is_added_and_stays_unpacked(own_run, tmp_path):
    data = zip_of(stripes(tmp_path / "z" / "stripes", 4, seed=1))
    at = home_on(own_run)
    at.radio(key="add_source").set_value("Upload a .zip").run()
    at.file_uploader(key="add_zip").set_value(("more.zip", data, "application/zip")).run()
    at.button(key="add_submit").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == ["added 4 images (stripes 4 new)"]
    added = load_run(own_run).gallery_files()[-4:]
    assert all(p.is_file() and ".data" in p.parts for p in added)  # not swept: the run refers to them


def test_home__a_folder_outside_the_shared_ones_is_refused_and_the_run_unchanged(own_run):
    stamp = (own_run / "config.json").read_bytes()
    at = home_on(own_run)
    at.text_input(key="add_folder").set_value("/etc")
    at.button(key="add_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "that folder is not one this server shares: use a folder inside its data folders (EMBEDDER_DATA_ROOTS)"
    ]
    assert (own_run / "config.json").read_bytes() == stamp


def test_home__the_default_run_offers_no_form(app_env):
    at = open_app("pages/home.py")
    assert not at.exception
    assert "add_submit" not in [b.key for b in at.button]
    assert any("the server's default run, which the browser cannot change" in c.value for c in at.caption)
