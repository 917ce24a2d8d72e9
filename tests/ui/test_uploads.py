"""ui/uploads.py: unpacked uploads go when nothing refers to them, and nothing else ever goes; files over the
size limit are refused in one line on both pages that take uploads."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import open_app, train_zip_on_page
from ui.uploads import sweep


def _upload(runs: Path, name: str) -> Path:
    folder = runs / ".data" / name / "wrapper" / "cat"
    folder.mkdir(parents=True)
    (folder / "1.png").write_bytes(b"png")
    return runs / ".data" / name


def _run(runs: Path, name: str, data_root: Path | str) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "config.json").write_text(
        json.dumps({"data_root": str(data_root), "train": {"data": str(data_root)}})
    )


def test_sweep__keeps_what_a_run_or_a_job_reads_and_deletes_the_rest(tmp_path):
    runs = tmp_path / "runs"
    used_by_run, used_by_job, unused = (
        _upload(runs, n) for n in ("0123456789abcdef", "1123456789abcdef", "2123456789abcdef")
    )
    _run(runs, "photos", used_by_run / "wrapper")
    _run(runs, "digits", "demo")
    removed = sweep(runs, in_use=[used_by_job / "wrapper"])
    assert removed == [unused]
    assert sorted(p.name for p in (runs / ".data").iterdir()) == ["0123456789abcdef", "1123456789abcdef"]


def test_sweep__never_touches_other_names_files_or_links(tmp_path):
    runs = tmp_path / "runs"
    _upload(runs, "keep-me")
    (runs / ".data" / "fedcba9876543210").write_text("a file named like an upload")
    outside = _upload(tmp_path / "elsewhere", "0123456789abcdef")
    (runs / ".data" / "abcdefabcdefabcd").symlink_to(outside)
    assert sweep(runs) == []
    assert (outside / "wrapper" / "cat" / "1.png").exists()
    assert sorted(p.name for p in (runs / ".data").iterdir()) == ["abcdefabcdefabcd", "fedcba9876543210", "keep-me"]


def test_sweep__an_unreadable_run_config_keeps_everything(tmp_path):
    runs = tmp_path / "runs"
    _upload(runs, "0123456789abcdef")
    (runs / "damaged").mkdir(parents=True)
    (runs / "damaged" / "config.json").write_text("{not json")
    assert sweep(runs) == []


def test_sweep__no_uploads_folder_is_fine(tmp_path):
    assert sweep(tmp_path / "runs") == []


def test_uploads_over_the_size_limit_are_refused_in_one_line(app_env, monkeypatch, tmp_path):
    from streamlit import config

    monkeypatch.setenv("EMBEDDER_RUNS_DIR", str(tmp_path / "runs"))
    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        big = b"\0" * (1024 * 1024 + 1)
        at = open_app("pages/query.py")
        at.file_uploader(key="query_files").set_value(("huge.png", big, "image/png")).run()
        assert [e.value for e in at.error] == ["**huge.png** is larger than the 1 MB upload limit; it was skipped."]
        at = train_zip_on_page(big, "huge")
        assert [e.value for e in at.error] == ["**huge.zip** is larger than the 1 MB upload limit; it was skipped."]
        assert not (tmp_path / "runs" / ".data").exists()
    finally:
        config.set_option("server.maxUploadSize", before)
