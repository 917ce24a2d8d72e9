"""AppTest smoke tests: every page renders against a real run, Query labels an uploaded held-out digit,
Train runs a background job to completion, and a missing demo run starts training on first start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from embedder.data import load_image
from embedder.predict import Predictor
from embedder.run import load_run

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/home.py", "pages/query.py", "pages/explore.py", "pages/train.py", "pages/evaluate.py"]


@pytest.fixture
def app_env(monkeypatch, digits_run):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(digits_run.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(digits_run))
    return digits_run


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def held_out_digit(run_dir: Path) -> tuple[bytes, str]:
    """The first held-out test image that the run labels right, as (PNG bytes, true label)."""
    run = load_run(run_dir)
    paths, labels = run.queries("test")
    predictor = Predictor(run)
    for path, label in zip(paths[:20], labels[:20]):
        if predictor.predict([load_image(path)], k=5, unknown_threshold=predictor.calibrated_threshold)[0].label == run.classes[label]:
            return path.read_bytes(), run.classes[label]
    raise AssertionError("the fixture run labels none of its first 20 held-out images right")


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception(app_env, page):
    at = _app(page)
    assert not at.exception
    assert not at.error


def test_home_shows_the_active_run(app_env):
    at = _app()
    assert [m.label for m in at.metric][:2] == ["Gallery images", "Labels"]
    assert at.metric[1].value == "10"
    assert at.selectbox(key="run-picker").value == str(app_env)


def test_explore_draws_every_gallery_point(app_env):
    at = _app("pages/explore.py")
    assert not at.exception
    chart = at.get("plotly_chart")[0]
    import json

    figure = json.loads(chart.proto.spec)
    assert sum(len(t["customdata"]) for t in figure["data"]) == len(load_run(app_env).gallery_paths)
    assert {t["type"] for t in figure["data"]} == {"scattergl"}

    at.segmented_control(key="map_dims").set_value("3D").run()
    assert not at.exception
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["type"] for t in figure["data"]} == {"scatter3d"}


def test_query_labels_an_uploaded_held_out_digit(app_env):
    data, label = held_out_digit(app_env)
    at = _app("pages/query.py")
    at.file_uploader(key="query_files").set_value(("digit.png", data, "image/png")).run()
    assert not at.exception
    assert [m.value for m in at.metric] == [label]
    assert len(at.get("download_button")) == 1
    import json

    query_trace = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][-1]
    assert query_trace["name"] == "your images" and query_trace["marker"]["symbol"] == "star"


def test_query_answers_the_good_file_when_another_is_not_an_image(app_env):
    data, label = held_out_digit(app_env)
    at = _app("pages/query.py")
    at.file_uploader(key="query_files").set_value(
        [("notes.txt", b"not an image", "text/plain"), ("digit.png", data, "image/png")]
    ).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["**notes.txt** is not a readable image; it was skipped."]
    assert [m.value for m in at.metric] == [label]


def _wait_for(job, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while job.running and time.time() < deadline:
        time.sleep(0.2)
    assert not job.running, "the training job did not finish in time"


def test_train_page_trains_in_the_background_and_activates_the_new_run(monkeypatch, tmp_path, app_env, shapes_folder):
    from ui import jobs

    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(str(shapes_folder))
    at.text_input[-1].set_value("shapes-1")  # the run name, inside the form
    at.number_input[0].set_value(1)  # epochs
    at.button[0].click().run()  # the form's Train button
    assert not at.exception and not at.error
    out = (tmp_path / "runs" / "shapes-1").resolve()
    job = jobs.registry().get(out)
    assert job is not None
    _wait_for(job)
    assert job.status == "done", job.error
    at.run()
    assert not at.exception
    assert at.session_state["active_run"] == str(out)
    assert len(job.history) == 1


def test_missing_demo_run_starts_training_in_the_background(monkeypatch, tmp_path, demo_cache):
    from ui import jobs

    monkeypatch.delenv("EMBEDDER_RUN", raising=False)
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = _app()
    assert not at.exception
    job = jobs.registry().get(tmp_path / "runs" / "demo")
    assert job is not None and job.cfg.data == "demo"
    assert any("Training **demo** in the background" in i.value for i in at.info)
    job.cancel()  # the full demo takes minutes; the cancel path must leave no run behind
    _wait_for(job)
    assert job.status in ("cancelled", "done")
    assert job.status == "done" or not (tmp_path / "runs" / "demo").exists()


def test_train_page_trains_on_an_uploaded_zip(monkeypatch, tmp_path, app_env, shapes_folder):
    import io
    import zipfile

    from ui import jobs

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(shapes_folder.rglob("*.png")):
            zf.write(f, f"shapes/{f.relative_to(shapes_folder).as_posix()}")
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Upload a .zip").run()
    at.file_uploader(key="train_zip").set_value(("shapes.zip", buf.getvalue(), "application/zip"))
    at.text_input[-1].set_value("zipped")
    at.number_input[0].set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error
    job = jobs.registry().get(tmp_path / "runs" / "zipped")
    _wait_for(job)
    assert job.status == "done", job.error
    assert Path(job.cfg.data).parent.parent == (tmp_path / "runs" / ".data").resolve()
    assert Path(job.cfg.data).name == "shapes"


def test_train_page_reports_a_missing_folder_in_one_line(app_env):
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value("/no/such/folder")
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["data folder not found: /no/such/folder"]


def test_query_says_unknown_for_an_image_unlike_the_gallery(app_env):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")  # a red square: no digit looks like it
    at = _app("pages/query.py")
    at.file_uploader(key="query_files").set_value(("red.png", buf.getvalue(), "image/png")).run()
    assert not at.exception
    assert [m.value for m in at.metric] == ["unknown"]
    at.toggle(key="query_unknown").set_value(False).run()
    assert [m.value for m in at.metric] != ["unknown"]


def test_evaluate_shows_confusion_and_a_threshold_slider(app_env):
    import json

    at = _app("pages/evaluate.py")
    assert not at.exception
    charts = {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.key}
    assert charts["confusion"]["data"][0]["type"] == "heatmap"
    assert charts["confusion"]["data"][0]["y"] == [str(d) for d in range(10)]
    answered = at.metric[0].value
    at.slider(key="eval-threshold").set_value(0.0).run()
    assert not at.exception
    assert at.metric[0].value == "0.0%" and answered != "0.0%"
