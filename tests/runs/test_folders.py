"""Swapping a new run into place: atomic where the kernel can, recoverable where it takes two renames."""

import os
import subprocess
import sys
import threading
from pathlib import Path

from embedder.images.data import is_inside
from embedder.runs.folders import MARKER, recover, swap_into_place

ROOT = Path(__file__).resolve().parents[2]


def _bundle(parent: Path, name: str, version: str) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / MARKER).write_text("x")
    (folder / "config.json").write_text(version)
    return folder


def test_swap_into_place__a_reader_never_finds_the_run_missing(tmp_path):
    out = _bundle(tmp_path, "run", "0")
    missing, done = [], threading.Event()

    def read():
        while not done.is_set():
            try:
                (out / "config.json").read_text()
            except OSError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 200):
            swap_into_place(_bundle(tmp_path, f".run.tmp-{i}", str(i)), out)
    finally:
        done.set()
        reader.join()
    assert (out / "config.json").read_text() == "199"
    assert not missing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # every previous version was cleaned up


CRASH = """
import os, sys
from pathlib import Path
from embedder.runs import folders
folders._exchange = lambda a, b: False  # the two-rename fallback of file systems without an atomic exchange
real, calls = os.replace, []
def replace(a, b):
    calls.append(1)
    real(a, b)
    if len(calls) == 1:
        os._exit(9)  # the process dies between the two renames
os.replace = replace
folders.swap_into_place(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_recover__a_crash_between_the_two_renames_leaves_the_old_run_recoverable(tmp_path):
    out = _bundle(tmp_path, "run", "old")
    new = _bundle(tmp_path, ".run.tmp-1", "new")
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(new), str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 9
    assert not out.exists()  # the worst moment: the name points to nothing...
    recover(out)  # ...until the next load or write puts the previous run back
    assert (out / "config.json").read_text() == "old"
    swap_into_place(new, out)
    assert (out / "config.json").read_text() == "new"


def test_is_inside__resolves_dots_and_links(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert is_inside(tmp_path / "data" / "a", tmp_path / "data")
    assert is_inside(tmp_path / "link" / "a", tmp_path / "data")
    assert is_inside(tmp_path / "data" / "a" / "..", tmp_path / "data")
    assert not is_inside(tmp_path / "data" / "..", tmp_path / "data")
    assert not is_inside(tmp_path / "data2", tmp_path / "data")
