"""ui/widgets.py: the active-run guard, the run picker, the run summary and the skipped-files report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import copy_run, open_app, page_text
from ui import access
from ui.widgets import skip_report

OUTSIDE_PATHS = ["/etc", "/nonexistent", "~", "/", "{root}/../..", "{root}/link-out", "{root}/link-out/passwd"]


def test_skip_report__the_current_dict_with_paths_relative_to_the_data_root(tmp_path):
    skipped = {
        "count": 5,  # more than the files listed: the list is capped
        "by_reason": {"not an image": 4, "too small": 1},
        "files": [{"path": "3/broken.png", "reason": "not an image"}, {"path": str(tmp_path / "7" / "tiny.png")}],
        "empty_classes": ["empty", 9],
    }
    assert skip_report(skipped, tmp_path) == (
        5,
        [{"path": "3/broken.png", "reason": "not an image"}, {"path": "7/tiny.png", "reason": "unknown"}],
        ["empty", "9"],
    )


def test_skip_report__older_runs_listed_absolute_paths_and_a_path_elsewhere_shows_its_name_only(tmp_path):
    skipped = [str(tmp_path / "3" / "broken.png"), "/srv/other/place/x.png", 42]
    assert skip_report(skipped, tmp_path) == (
        2,
        [{"path": "3/broken.png", "reason": "unreadable"}, {"path": "x.png", "reason": "unreadable"}],
        [],
    )


@pytest.mark.parametrize("skipped", [None, {}, "garbage", {"count": "three", "files": "nope"}])
def test_skip_report__nothing_or_something_unreadable_is_no_skips(skipped, tmp_path):
    assert skip_report(skipped, tmp_path) == (0, [], [])


def test_home_shows_the_active_run(app_env):
    at = open_app()
    assert [m.label for m in at.metric][:2] == ["Gallery images", "Labels"]
    assert at.metric[1].value == "10"
    assert at.selectbox(key="run-picker").value == str(app_env)


@pytest.mark.parametrize("typed", OUTSIDE_PATHS)
def test_home_refuses_a_run_outside_the_data_roots_in_the_same_words(app_without_run, tmp_path, typed):
    (tmp_path / "link-out").symlink_to("/etc")
    at = open_app()
    at.text_input(key="run-picker-path").set_value(typed.format(root=tmp_path))
    at.button(key="run-picker-path-load").click().run()
    assert [e.value for e in at.error] == [access.OUTSIDE]
    assert at.session_state["active_run"] == str(app_without_run)


def test_home_loads_a_run_inside_the_data_roots(app_env, tmp_path):
    shutil.copytree(app_env, tmp_path / "elsewhere" / "copied")
    at = open_app()
    at.text_input(key="run-picker-path").set_value(str(tmp_path / "elsewhere" / "copied"))
    at.button(key="run-picker-path-load").click().run()
    assert not at.exception and not at.error
    assert at.session_state["active_run"] == str(tmp_path / "elsewhere" / "copied")
    # and a name relative to a root, as the app shows paths, works too
    at.text_input(key="run-picker-path").set_value(f"{tmp_path.name}/elsewhere")
    at.button(key="run-picker-path-load").click().run()
    assert [e.value for e in at.error] == [f"{tmp_path.name}/elsewhere is not a run folder (no config.json)"]


def test_a_damaged_run_shows_one_line_without_server_paths(app_env, monkeypatch, tmp_path):
    broken = copy_run(app_env, tmp_path / "runs" / "broken", config_json="{not json")
    monkeypatch.setenv("EMBEDDER_RUN", str(broken))
    at = open_app()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith(f"damaged run {tmp_path.name}/runs/broken: ")
    text = page_text(at)
    assert str(tmp_path) not in text and "Traceback" not in text


def test_train_page_lists_the_files_training_skipped(app_env, monkeypatch, tmp_path):
    config = json.loads((app_env / "config.json").read_text())
    config["skipped"] = {
        "count": 3,
        "by_reason": {"not an image": 2, "too small": 1},
        "files": [{"path": "3/broken.png", "reason": "not an image"}, {"path": "7/tiny.png", "reason": "too small"}],
        "empty_classes": ["empty"],
    }
    monkeypatch.setenv("EMBEDDER_RUN", str(copy_run(app_env, tmp_path / "skips", config_json=config)))
    at = open_app("pages/train.py")
    assert not at.exception
    assert [e.label for e in at.expander if "skipped" in e.label] == ["3 files skipped, 1 empty class folder(s)"]
    table = at.dataframe[0].value
    assert table.to_dict("records") == [
        {"path": "3/broken.png", "reason": "not an image"},
        {"path": "7/tiny.png", "reason": "too small"},
    ]
    assert any("`empty`" in m.value for m in at.markdown)
    assert "The first 2 of 3." in [c.value for c in at.caption]


def test_train_page_reads_the_older_list_of_skipped_paths(app_env, monkeypatch, tmp_path):
    config = json.loads((app_env / "config.json").read_text())
    config["skipped"] = [str(Path(config["data_root"]) / "3" / "broken.png")]
    monkeypatch.setenv("EMBEDDER_RUN", str(copy_run(app_env, tmp_path / "old", config_json=config)))
    at = open_app("pages/train.py")
    assert not at.exception
    assert [e.label for e in at.expander if "skipped" in e.label] == ["1 file skipped"]
    assert at.dataframe[0].value.to_dict("records") == [{"path": "3/broken.png", "reason": "unreadable"}]


@pytest.mark.slow
def test_a_run_being_improved_answers_meanwhile_and_says_so(
    monkeypatch, tmp_path, shapes_folder, no_job_outlives_its_test
):
    from embedder.config import TrainConfig
    from ui import jobs

    out = tmp_path / "runs" / "growing"
    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(out.parent))
    monkeypatch.setenv("EMBEDDER_RUN", str(out))
    monkeypatch.setenv("EMBEDDER_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    cfg = TrainConfig(data=str(shapes_folder), out=str(out), epochs=500, patience=500, selection="holdout", dim=16)
    job = jobs.registry().start(cfg)
    assert job.wait_until(lambda j: j.queryable and j.stage in ("train", "epoch"), timeout=300)
    at = open_app()
    assert not at.exception
    assert [m.label for m in at.metric][:2] == ["Gallery images", "Labels"]  # the run, not a wait
    text = page_text(at)
    assert "Improving **growing** in the background (its first answer answers meanwhile)" in text
    assert "fills in as soon as it can answer" not in text
    job.cancel()
    assert job.wait(90) and job.status == "cancelled"
