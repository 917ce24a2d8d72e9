"""One writer per run: an OS file lock held for a writer's whole read-modify-write.

Two ``add``s on one run each read the gallery, append to it and swap their copy into place: without a lock the
later swap wins and the other's images are silently gone. Every writer of a run (train, add, import, relabel, the
app's jobs) takes ``writing(run)`` first; a second writer waits for the first, or is refused in one line when the
wait runs out. Readers never take the lock: the swap into place is atomic, so they see the old run or the new one.

The lock file lives beside the run (``.NAME.lock`` in its parent), not inside it: the run folder itself is swapped
out by every write. ``bundle.write`` takes the lock itself when its caller does not hold it (``held``), so no write
of a run goes unlocked; the read-modify-write around it is the caller's to hold.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import EmbedderError
from ..progress import Progress, Reporter, Stage, silent

WAIT_SECONDS = 600.0  # how long a second writer waits for the first before it is refused


_here = threading.local()  # .runs: the lock paths this thread holds


def held(run_dir: str | os.PathLike) -> bool:
    """Whether this thread holds the write lock of ``run_dir`` now."""
    return lock_path(run_dir) in getattr(_here, "runs", set())


def lock_path(run_dir: str | os.PathLike) -> Path:
    out = Path(run_dir).expanduser().resolve()
    return out.parent / f".{out.name}.lock"


@contextmanager
def writing(run_dir: str | os.PathLike, report: Reporter = silent, wait: float | None = None) -> Iterator[None]:
    """Hold the run's write lock for the block; while another process holds it, say so and wait up to ``wait``
    seconds (``WAIT_SECONDS`` when None).

    Raises:
        EmbedderError: another process still writes the run after ``wait`` seconds.
    """
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        report(Progress(Stage.NOTE, message=f"{Path(run_dir).name} is being written by another process: waiting"))
        wait = WAIT_SECONDS if wait is None else wait
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise EmbedderError(
                f"run {Path(run_dir).name} is being written by another process (still after {wait:.0f} s): "
                "try again when it is done"
            ) from None
    mine = getattr(_here, "runs", set())
    _here.runs = mine | {path}
    try:
        yield
    finally:
        _here.runs = mine
        lock.release()


def training_lock_path(run_dir: str | os.PathLike) -> Path:
    out = Path(run_dir).expanduser().resolve()
    return out.parent / f".{out.name}.training.lock"


@contextmanager
def training(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir``'s training lock for a whole training: one training at a time into a run, and the writers
    that change a gallery (add, relabel, import) refuse meanwhile (``training_under_way``): the run the training
    writes at its end would drop what they changed. The write lock (``writing``) is held only around each write,
    so readers and the map job (which writes only ``projections/``) go on between them.

    Raises:
        EmbedderError: another training of this run is under way.
    """
    path = training_lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise EmbedderError(
            f"a training of {Path(run_dir).name} is under way already: wait for it to finish, or cancel it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def training_under_way(run_dir: str | os.PathLike) -> bool:
    """Whether some process (this one included, in another thread) trains into ``run_dir`` now."""
    path = training_lock_path(run_dir)
    if not path.exists():
        return False
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
