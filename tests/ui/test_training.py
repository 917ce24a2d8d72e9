"""ui/training.py and the Train page: a form's choices checked and turned into a queued job, the queue, the
runs a browser may not replace, uploaded zips and their clean-up. Jobs are waited for with ``TrainJob.wait``."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.errors import EmbedderError
from tests.helpers import copy_run, open_app, page_text, train_on_page, train_zip_on_page, zip_of
from ui import access, jobs, training

OUTSIDE_PATHS = ["/etc", "/nonexistent", "~", "/", "{root}/../..", "{root}/link-out", "{root}/link-out/passwd"]


def _finished(job: jobs.TrainJob) -> jobs.TrainJob:
    assert job is not None, "no job was started"
    assert job.wait(90), f"{job.out.name} is still {job.status}"
    return job


@pytest.mark.parametrize("name", ["shapes-1", "A.b_c-9", "x" * 80])
def test_out_path__a_plain_name_is_a_folder_in_the_runs_folder(monkeypatch, tmp_path, name):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    assert training.out_path(f" {name} ") == tmp_path / "runs" / name


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "-flag", "x" * 81, "naïve", "a b"])
def test_out_path__anything_else_is_refused_with_an_example(monkeypatch, tmp_path, name):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(
        EmbedderError, match=r"^run name: letters, digits, '\.', '_' and '-' only \(e\.g\. my-photos-1\)$"
    ):
        training.out_path(name)


def test_check_target__the_demo_and_the_operators_run_are_never_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EMBEDDER_RUN", str(tmp_path / "elsewhere" / "main"))
    for run in (tmp_path / "runs" / "demo", tmp_path / "elsewhere" / "main"):
        with pytest.raises(EmbedderError, match=f"^run '{run.name}' cannot be replaced from the browser"):
            training.check_target(run)
    training.check_target(tmp_path / "runs" / "mine")  # any other name is free


def test_config__a_setting_out_of_range_names_its_flag(tmp_path):
    with pytest.raises(EmbedderError, match=r"^--margin must be in \[0\.001, 2\], got 5\.0$"):
        training.config("demo", tmp_path / "r", {"margin": 5.0})
    assert training.config("demo", tmp_path / "r", {"epochs": 2}).out == str(tmp_path / "r")


def test_train_page_reports_a_missing_folder_in_one_line(app_without_run, tmp_path):
    at = open_app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(str(tmp_path / "no" / "such"))
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"data folder not found: {tmp_path.name}/no/such"]
    assert jobs.registry().get(tmp_path / "runs" / at.text_input(key="train_name").value) is None


@pytest.mark.parametrize("typed", OUTSIDE_PATHS)
def test_train_page_refuses_a_folder_outside_the_data_roots_in_the_same_words(app_without_run, tmp_path, typed):
    (tmp_path / "link-out").symlink_to("/etc")  # inside the root by name, outside by where it leads
    at = open_app("pages/train.py")
    at.radio(key="train_source").set_value("Folder on the server").run()
    at.text_input(key="train_folder").set_value(typed.format(root=tmp_path))
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [access.OUTSIDE]


@pytest.mark.slow
def test_train_page_trains_in_the_background_and_activates_the_new_run(monkeypatch, tmp_path, app_env, shapes_folder):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = train_on_page(shapes_folder, "shapes-1")
    assert not at.exception and not at.error
    out = (tmp_path / "runs" / "shapes-1").resolve()
    job = _finished(jobs.registry().get(out))
    assert job.status == "done", job.error
    at.run()
    assert not at.exception
    assert at.session_state["active_run"] == str(out)
    assert len(job.history) == 1


@pytest.mark.slow
def test_train_page_trains_on_an_uploaded_zip(monkeypatch, tmp_path, app_env, shapes_folder):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = train_zip_on_page(zip_of(shapes_folder, prefix="shapes/"), "zipped")
    assert not at.exception and not at.error
    job = _finished(jobs.registry().get(tmp_path / "runs" / "zipped"))
    assert job.status == "done", job.error
    assert Path(job.cfg.data).parent.parent == (tmp_path / "runs" / ".data").resolve()
    assert Path(job.cfg.data).name == "shapes"


@pytest.mark.slow
def test_an_unexpected_training_failure_is_one_generic_line(app_env, monkeypatch, tmp_path, shapes_folder):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".doomed.partial").write_text("")  # where the first checkpoint goes: a file, not a folder
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    at = train_on_page(shapes_folder, "doomed")
    job = _finished(jobs.registry().get(tmp_path / "runs" / "doomed"))
    at.run()
    assert not at.exception
    assert job.error == jobs.UNEXPECTED
    assert [e.value for e in at.error] == [jobs.UNEXPECTED]
    text = page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text and "Error" not in at.error[0].value


@pytest.mark.slow
def test_a_second_training_waits_in_the_queue_then_runs(app_env, monkeypatch, tmp_path, shapes_folder):
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    # No validation share: nothing stops it early, so it is still training when the others arrive.
    first = train_on_page(shapes_folder, "long", epochs=500, val_fraction=0.0)
    second = train_on_page(shapes_folder, "short")
    long_job, short_job = (
        jobs.registry().get(tmp_path / "runs" / "long"),
        jobs.registry().get(tmp_path / "runs" / "short"),
    )
    assert long_job.status == "running" and short_job.status == "queued"
    assert [i.value for i in second.info] == ["queued: position 1 — another training is running"]
    third = train_on_page(shapes_folder, "long")
    assert [e.value for e in third.error] == ["run 'long' is being trained already: choose another name"]

    first.button(key="cancel-long").click().run()
    _finished(long_job)
    _finished(short_job)
    assert long_job.status == "cancelled" and short_job.status == "done", short_job.error
    second.run()
    assert second.session_state["active_run"] == str(tmp_path / "runs" / "short")


@pytest.mark.slow
def test_a_training_cannot_replace_a_run_another_session_has_open(app_env, monkeypatch, tmp_path, shapes_folder):
    runs = tmp_path / "runs"
    copy_run(app_env, runs / "shared")
    copy_run(app_env, runs / "operator")
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    monkeypatch.setenv("EMBEDDER_RUN", str(runs / "operator"))
    viewer = open_app()
    viewer.selectbox(key="run-picker").set_value(str(runs / "shared")).run()
    viewer.button(key="run-picker-load").click().run()
    assert viewer.session_state["active_run"] == str(runs / "shared")
    stamp = (runs / "shared" / "config.json").stat().st_mtime_ns

    trainer = open_app("pages/train.py")
    refusals = {
        "shared": "run 'shared' is open in another session: choose another name",
        "operator": "run 'operator' cannot be replaced from the browser: choose another name",
        "demo": "run 'demo' cannot be replaced from the browser: choose another name",
    }
    for name, refusal in refusals.items():
        train_on_page(shapes_folder, name, page=trainer)
        assert [e.value for e in trainer.error] == [refusal]
        assert jobs.registry().get(runs / name) is None
    assert (runs / "shared" / "config.json").stat().st_mtime_ns == stamp

    viewer.selectbox(key="run-picker").set_value(str(runs / "operator")).run()  # the viewer moves on
    viewer.button(key="run-picker-load").click().run()
    train_on_page(shapes_folder, "shared", page=trainer)
    assert not trainer.error
    _finished(jobs.registry().get(runs / "shared"))


@pytest.mark.slow
def test_an_uploaded_zip_is_deleted_when_its_training_fails(app_env, monkeypatch, tmp_path, shapes_folder):
    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    (runs / ".data" / "keep-me").mkdir(parents=True)  # not an unpacked upload: never touched
    at = train_zip_on_page(zip_of(shapes_folder, ["circle"]), "one-class")  # training needs two classes
    job = _finished(jobs.registry().get(runs / "one-class"))
    assert job.status == "failed"
    assert sorted(p.name for p in (runs / ".data").iterdir()) == ["keep-me"]
    at.run()
    assert len(at.error) == 1 and str(tmp_path) not in at.error[0].value


@pytest.mark.slow
def test_an_uploaded_zip_is_deleted_when_its_run_is_replaced(app_env, monkeypatch, tmp_path, shapes_folder):
    runs = tmp_path / "runs"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(runs))
    for data in (zip_of(shapes_folder), zip_of(shapes_folder, ["circle", "square"])):
        train_zip_on_page(data, "zipped")
        job = _finished(jobs.registry().get(runs / "zipped"))
        assert job.status == "done", job.error
        unpacked = Path(job.cfg.data).relative_to(runs / ".data").parts[0]
        assert [p.name for p in (runs / ".data").iterdir()] == [unpacked]  # the first zip's files went with its run
