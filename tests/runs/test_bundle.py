"""embedder/runs/bundle.py: --out only ever replaces a run, never a folder of the user's, never the data."""

from pathlib import Path

import pytest

from embedder.errors import EmbedderError
from tests.helpers import copy_run


def test_check_out__refuses_what_is_not_a_run(tmp_path, digits_run):
    from embedder.runs.run import check_out

    check_out(tmp_path / "new")  # a new folder is fine
    check_out(digits_run)  # so is a run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(EmbedderError, match="is not a run folder .*thesis.tex.* never replaced"):
        check_out(mine)
    with pytest.raises(EmbedderError, match="is not a run folder"):
        check_out(mine, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmbedderError, match="--overwrite"):
        check_out(empty)
    check_out(empty, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmbedderError, match="is a file"):
        check_out(tmp_path / "file")
    run_plus = copy_run(digits_run, tmp_path / "run-plus")
    (run_plus / "notes.txt").write_text("mine")  # a user's file inside a run: the run is no longer ours alone
    with pytest.raises(EmbedderError, match="notes.txt"):
        check_out(run_plus)


@pytest.mark.parametrize("out", ["data", "data/cats", "."])
def test_check_out__never_overlaps_the_data(tmp_path, out):
    from embedder.runs.run import check_out

    (tmp_path / "data" / "cats").mkdir(parents=True)
    with pytest.raises(EmbedderError, match="overlaps the data folder"):
        check_out(tmp_path / out, inputs=[tmp_path / "data"])


def test_check_out__a_folder_that_cannot_be_written_is_refused_before_training(tmp_path):
    import os

    from embedder.runs.run import check_out

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: try a place no one can write to
            locked = Path("/proc")
        with pytest.raises(EmbedderError, match="cannot write runs into"):
            check_out(locked / "run")
    finally:
        (tmp_path / "locked").chmod(0o700)
