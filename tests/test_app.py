"""AppTest smoke tests: every page renders against a real run, Query labels an uploaded held-out digit,
Train runs a background job to completion, and a missing demo run starts training on first start.
App rules for a network: the password, the shared folders, no server paths or tracebacks in the page, the
training queue, runs others use, uploads and their clean-up (tests from test_password_gate_… on)."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from helpers import held_out_digit
from streamlit.testing.v1 import AppTest

from embedder.run import load_run

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/home.py", "pages/query.py", "pages/explore.py", "pages/train.py", "pages/evaluate.py"]


@pytest.fixture
def app_env(monkeypatch, tmp_path, digits_run):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(digits_run.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(digits_run))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))  # the generated image folders live here
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    return digits_run


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    """The job registry is process-wide: a job left queued or running would hold the training slot."""
    yield
    from ui import jobs

    left = [j for j in jobs.registry().all() if j.active]
    for job in left:
        job.cancel()
    for job in left:
        _wait_for(job)


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


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
    at.text_input(key="train_name").set_value("shapes-1")
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_submit").click().run()
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
    at.text_input(key="train_name").set_value("zipped")
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_submit").click().run()
    assert not at.exception and not at.error
    job = jobs.registry().get(tmp_path / "runs" / "zipped")
    _wait_for(job)
    assert job.status == "done", job.error
    assert Path(job.cfg.data).parent.parent == (tmp_path / "runs" / ".data").resolve()
    assert Path(job.cfg.data).name == "shapes"


def test_train_page_reports_a_missing_folder_in_one_line(app_env, tmp_path):
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "no" / "such"))
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"data folder not found: {tmp_path.name}/no/such"]


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


# --- App rules for a network -------------------------------------------------------------------------------


def _nodes(at: AppTest):
    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return list(walk(at._tree))


def _page_text(at: AppTest) -> str:
    """Everything the script sent towards the browser: element protos, with widget ids, labels and help."""
    return "\n".join(str(getattr(n, "proto", "")) for n in _nodes(at))


def _leaves(at: AppTest) -> list[str]:
    return [type(n).__name__ for n in _nodes(at) if not getattr(n, "children", None) and getattr(n, "proto", None)]


def _enter(at: AppTest, password: str) -> AppTest:
    at.text_input(key="password").input(password)
    return at.button(key="password_enter").click().run()


def test_password_gate__a_wrong_password_gets_one_line_and_nothing_else(app_env, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = _app()
    assert _leaves(at) == ["TextInput", "Button"]
    _enter(at, "open sesam")
    assert not at.exception
    assert [e.value for e in at.error] == ["Wrong password."]
    assert _leaves(at) == ["TextInput", "Button", "Error"]  # no title, no sidebar, no run name
    assert app_env.name not in _page_text(at)


def test_password_gate__a_deep_link_asks_first_then_opens_its_page(app_env, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = _app("pages/query.py")
    assert _leaves(at) == ["TextInput", "Button"]
    _enter(at, "open sesame")
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Query"]
    at.run()  # remembered for the session
    assert [t.value for t in at.title] == ["Query"]
    assert at.session_state["password"] == ""  # the typed password is not kept


def test_password_gate__the_password_may_come_from_secrets(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.secrets["password"] = "from secrets"
    at.run()
    assert _leaves(at) == ["TextInput", "Button"]
    _enter(at, "from secrets")
    assert [t.value for t in at.title] == ["Image embedder"]


def test_no_password_and_no_secrets_file_leaves_the_app_open(app_env):
    from ui import auth

    assert auth.configured_password() is None  # and reading st.secrets without a secrets file did not raise
    assert [t.value for t in _app().title] == ["Image embedder"]


OUTSIDE_PATHS = ["/etc", "/nonexistent", "~", "/", "{root}/../..", "{root}/link-out", "{root}/link-out/passwd"]


@pytest.mark.parametrize("typed", OUTSIDE_PATHS)
def test_train_page_refuses_a_folder_outside_the_data_roots_in_the_same_words(app_env, tmp_path, typed):
    from ui import access

    (tmp_path / "link-out").symlink_to("/etc")  # inside the root by name, outside by where it leads
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(typed.format(root=tmp_path))
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [access.OUTSIDE]


@pytest.mark.parametrize("typed", OUTSIDE_PATHS)
def test_home_refuses_a_run_outside_the_data_roots_in_the_same_words(app_env, tmp_path, typed):
    from ui import access

    (tmp_path / "link-out").symlink_to("/etc")
    at = _app()
    at.text_input(key="run-picker-path").set_value(typed.format(root=tmp_path))
    at.button(key="run-picker-path-load").click().run()
    assert [e.value for e in at.error] == [access.OUTSIDE]
    assert at.session_state["active_run"] == str(app_env)


def test_home_loads_a_run_inside_the_data_roots(app_env, tmp_path):
    shutil.copytree(app_env, tmp_path / "elsewhere" / "copied")
    at = _app()
    at.text_input(key="run-picker-path").set_value(str(tmp_path / "elsewhere" / "copied"))
    at.button(key="run-picker-path-load").click().run()
    assert not at.exception and not at.error
    assert at.session_state["active_run"] == str(tmp_path / "elsewhere" / "copied")
    # and a name relative to a root, as the app shows paths, works too
    at.text_input(key="run-picker-path").set_value(f"{tmp_path.name}/elsewhere")
    at.button(key="run-picker-path-load").click().run()
    assert [e.value for e in at.error] == [f"{tmp_path.name}/elsewhere is not a run folder (no config.json)"]


def _copy_run(src: Path, dest: Path, **changes) -> Path:
    """A copy of a run with files replaced: {"config.json": dict or str, ...}."""
    shutil.copytree(src, dest)
    for name, content in changes.items():
        name = name.replace("_json", ".json")
        (dest / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return dest


def test_a_damaged_run_shows_one_line_without_server_paths(app_env, monkeypatch, tmp_path):
    broken = _copy_run(app_env, tmp_path / "runs" / "broken", config_json="{not json")
    monkeypatch.setenv("EMBEDDER_RUN", str(broken))
    at = _app()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith(f"damaged run {tmp_path.name}/runs/broken: ")
    text = _page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text


def test_an_unexpected_error_on_a_page_is_one_generic_line(app_env, monkeypatch, tmp_path):
    metrics = json.loads((app_env / "metrics.json").read_text())
    metrics["test"]["precision_at_1"] = "very good"  # a run written by something else: the page cannot format it
    odd = _copy_run(app_env, tmp_path / "odd", metrics_json=metrics)
    monkeypatch.setenv("EMBEDDER_RUN", str(odd))
    at = _app()  # the first run goes through app.py, which guards every page
    assert not at.exception
    assert [e.value for e in at.error] == ["Something went wrong on this page; the details are in the server log."]
    text = _page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text and "ValueError" not in text


def _train(shapes: Path, name: str, page: AppTest | None = None, **settings) -> AppTest:
    """A Train page session that submits a training of ``shapes`` into runs/<name>."""
    at = page or _app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(str(shapes))
    at.text_input(key="train_name").set_value(name)
    for key, value in {"epochs": 1, **settings}.items():
        at.number_input(key=f"train_{key}").set_value(value)
    return at.button(key="train_submit").click().run()


def test_an_unexpected_training_failure_is_one_generic_line(app_env, monkeypatch, tmp_path, shapes_folder):
    from ui import jobs

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "not-a-folder"))  # the run cannot be written
    at = _train(shapes_folder, "doomed")
    job = jobs.registry().get(tmp_path / "not-a-folder" / "doomed")
    _wait_for(job)
    at.run()
    assert not at.exception
    assert job.error == jobs.UNEXPECTED
    assert [e.value for e in at.error] == [jobs.UNEXPECTED]
    text = _page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text and "Error" not in at.error[0].value


def test_a_second_training_waits_in_the_queue_then_runs(app_env, monkeypatch, tmp_path, shapes_folder):
    from ui import jobs

    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    # No validation share: nothing stops it early, so it is still training when the others arrive.
    first = _train(shapes_folder, "long", epochs=500, val_fraction=0.0)
    second = _train(shapes_folder, "short")
    long_job, short_job = (
        jobs.registry().get(tmp_path / "runs" / "long"),
        jobs.registry().get(tmp_path / "runs" / "short"),
    )
    assert long_job.status == "running" and short_job.status == "queued"
    assert [i.value for i in second.info] == ["queued: position 1 — another training is running"]
    third = _train(shapes_folder, "long")
    assert [e.value for e in third.error] == ["run 'long' is being trained already: choose another name"]

    first.button(key="cancel-long").click().run()
    _wait_for(long_job)
    _wait_for(short_job)
    assert long_job.status == "cancelled" and short_job.status == "done", short_job.error
    second.run()
    assert second.session_state["active_run"] == str(tmp_path / "runs" / "short")


def test_a_training_cannot_replace_a_run_another_session_has_open(app_env, monkeypatch, tmp_path, shapes_folder):
    from ui import jobs

    runs = tmp_path / "runs"
    _copy_run(app_env, runs / "shared")
    _copy_run(app_env, runs / "operator")
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    monkeypatch.setenv("EMBEDDER_RUN", str(runs / "operator"))
    viewer = _app()
    viewer.selectbox(key="run-picker").set_value(str(runs / "shared")).run()
    viewer.button(key="run-picker-load").click().run()
    assert viewer.session_state["active_run"] == str(runs / "shared")
    stamp = (runs / "shared" / "config.json").stat().st_mtime_ns

    trainer = _app("pages/train.py")
    refusals = {
        "shared": "run 'shared' is open in another session: choose another name",
        "operator": "run 'operator' cannot be replaced from the browser: choose another name",
        "demo": "run 'demo' cannot be replaced from the browser: choose another name",
    }
    for name, refusal in refusals.items():
        _train(shapes_folder, name, page=trainer)
        assert [e.value for e in trainer.error] == [refusal]
        assert jobs.registry().get(runs / name) is None
    assert (runs / "shared" / "config.json").stat().st_mtime_ns == stamp

    viewer.selectbox(key="run-picker").set_value(str(runs / "operator")).run()  # the viewer moves on
    viewer.button(key="run-picker-load").click().run()
    _train(shapes_folder, "shared", page=trainer)
    assert not trainer.error
    _wait_for(jobs.registry().get(runs / "shared"))


def _zip(folder: Path, classes: list[str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            if classes is None or f.parent.name in classes:
                zf.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()


def _train_zip(data: bytes, name: str) -> AppTest:
    at = _app("pages/train.py")
    at.radio(key="train_source").set_value("Upload a .zip").run()
    at.file_uploader(key="train_zip").set_value((f"{name}.zip", data, "application/zip"))
    at.text_input(key="train_name").set_value(name)
    at.number_input(key="train_epochs").set_value(1)
    return at.button(key="train_submit").click().run()


def test_an_uploaded_zip_is_deleted_when_its_training_fails(app_env, monkeypatch, tmp_path, shapes_folder):
    from ui import jobs

    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    (runs / ".data" / "keep-me").mkdir(parents=True)  # not an unpacked upload: never touched
    at = _train_zip(_zip(shapes_folder, ["circle"]), "one-class")  # training needs two classes
    job = jobs.registry().get(runs / "one-class")
    _wait_for(job)
    assert job.status == "failed"
    assert sorted(p.name for p in (runs / ".data").iterdir()) == ["keep-me"]
    at.run()
    assert len(at.error) == 1 and str(tmp_path) not in at.error[0].value


def test_an_uploaded_zip_is_deleted_when_its_run_is_replaced(app_env, monkeypatch, tmp_path, shapes_folder):
    from ui import jobs

    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    for data in (_zip(shapes_folder), _zip(shapes_folder, ["circle", "square"])):
        _train_zip(data, "zipped")
        job = jobs.registry().get(runs / "zipped")
        _wait_for(job)
        assert job.status == "done", job.error
        unpacked = Path(job.cfg.data).relative_to(runs / ".data").parts[0]
        assert [p.name for p in (runs / ".data").iterdir()] == [unpacked]  # the first zip's files went with its run


def test_uploads_over_the_size_limit_are_refused_in_one_line(app_env, monkeypatch, tmp_path):
    from streamlit import config

    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        big = b"\0" * (1024 * 1024 + 1)
        at = _app("pages/query.py")
        at.file_uploader(key="query_files").set_value(("huge.png", big, "image/png")).run()
        assert [e.value for e in at.error] == ["**huge.png** is larger than the 1 MB upload limit; it was skipped."]
        at = _train_zip(big, "huge")
        assert [e.value for e in at.error] == ["**huge.zip** is larger than the 1 MB upload limit; it was skipped."]
        assert not (tmp_path / "runs" / ".data").exists()
    finally:
        config.set_option("server.maxUploadSize", before)


def test_train_page_lists_the_files_training_skipped(app_env, monkeypatch, tmp_path):
    config = json.loads((app_env / "config.json").read_text())
    config["skipped"] = {
        "count": 3,
        "by_reason": {"not an image": 2, "too small": 1},
        "files": [{"path": "3/broken.png", "reason": "not an image"}, {"path": "7/tiny.png", "reason": "too small"}],
        "empty_classes": ["empty"],
    }
    monkeypatch.setenv("EMBEDDER_RUN", str(_copy_run(app_env, tmp_path / "skips", config_json=config)))
    at = _app("pages/train.py")
    assert not at.exception
    assert [e.label for e in at.expander if "skipped" in e.label] == ["3 files skipped, 1 empty class folder(s)"]
    table = at.dataframe[0].value
    assert table.to_dict("records") == [
        {"path": "3/broken.png", "reason": "not an image"},
        {"path": "7/tiny.png", "reason": "too small"},
    ]
    assert any("`empty`" in m.value for m in at.markdown)


def test_train_page_reads_the_older_list_of_skipped_paths(app_env, monkeypatch, tmp_path):
    config = json.loads((app_env / "config.json").read_text())
    config["skipped"] = [str(Path(config["data_root"]) / "3" / "broken.png")]
    monkeypatch.setenv("EMBEDDER_RUN", str(_copy_run(app_env, tmp_path / "old", config_json=config)))
    at = _app("pages/train.py")
    assert not at.exception
    assert [e.label for e in at.expander if "skipped" in e.label] == ["1 file skipped"]
    assert at.dataframe[0].value.to_dict("records") == [{"path": "3/broken.png", "reason": "unreadable"}]
