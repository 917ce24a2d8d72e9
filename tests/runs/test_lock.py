"""embedder/runs/lock.py: one writer per run, held across processes and threads; readers never wait."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from embedder.errors import EmbedderError
from embedder.runs import lock
from embedder.runs.run import load_run

HOLD = """
import sys, time
from embedder.runs.lock import writing
with writing(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_held__only_inside_the_block_and_only_in_its_thread(tmp_path):
    run = tmp_path / "run"
    seen = []
    with lock.writing(run):
        assert lock.held(run)
        other = threading.Thread(target=lambda: seen.append(lock.held(run)))
        other.start()
        other.join()
    assert seen == [False] and not lock.held(run)


def test_writing__a_second_thread_of_the_same_process_waits_too(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.3)
    run, failed = tmp_path / "run", []

    def second() -> None:
        try:
            with lock.writing(run):
                pass
        except EmbedderError as exc:
            failed.append(str(exc))

    with lock.writing(run):
        other = threading.Thread(target=second)
        other.start()
        other.join()
    assert failed and "is being written by another process (still after 0 s)" in failed[0]


def test_a_run_loads_while_another_process_writes_it(digits_run):
    """Readers never take the lock: the swap into place is atomic, so they see the old run or the new one."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(digits_run), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        assert len(load_run(digits_run).gallery_paths) > 0
        assert time.monotonic() - start < 30
        refused = pytest.raises(EmbedderError, match="is being written by another process")
        with refused, lock.writing(digits_run, wait=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
