"""How a hostile case is judged: the real CLI in a fresh process, its exit code, its stderr, its wall time and its
peak memory (the process and the ONNX worker it started: ``os.wait4`` reports the larger), and every file of the
folders it could touch before and after."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SECONDS = 90  # the bars: every case answers within 90 s ...
MEGABYTES = 2048  # ... and 2 GB
ROOT = Path(__file__).resolve().parents[2]
# The code under test, whatever the folder a case runs in (an installed copy elsewhere must not answer instead)
CODE = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


@dataclass
class Outcome:
    code: int
    err: list[str]  # stderr's non-empty lines
    out: str
    seconds: float
    peak_mb: float


def run_cli(*args: str, env: dict | None = None, timeout: float = SECONDS, cwd: Path | None = None) -> Outcome:
    """``python -m embedder ARGS`` in a fresh process; killed past ``timeout`` (the case then fails)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        peak = Path(tempfile.mkdtemp()) / "peak"
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(peak), sys.executable, "-m", "embedder", *args],
            stdout=out,
            stderr=err,
            env={**os.environ, **CODE, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # past the timeout the launcher and the command are killed together
        )
        killer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        killer.start()
        proc.wait()
        killer.cancel()
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
        kilobytes = float(peak.read_text()) if peak.exists() else float("inf")
        return Outcome(proc.returncode, lines, out.read().decode(errors="replace"), seconds, kilobytes / 1024)


# The command's own peak memory. A process started straight from pytest would count pytest's: Linux carries the
# peak RSS of the memory a process replaces at exec into its own, and pytest may hold gigabytes by then. A small
# launcher in between replaces only its own few megabytes; it waits for the command and writes its peak (kB).
LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def assert_refused(outcome: Outcome, *words: str, progress: bool = False) -> str:
    """Exit 2, one line on stderr that is not a bug report and holds ``words``, within the time and memory
    bars (with ``progress``, the command's progress lines may come before it: the error is the last line and the
    only one). Returns the line."""
    assert outcome.code == 2, (outcome.code, outcome.err[-5:])
    errors = [e for e in outcome.err if e.startswith("error") or "Traceback" in e or "unexpected" in e]
    assert errors == outcome.err[-1:] and (progress or len(outcome.err) == 1), outcome.err
    line = outcome.err[-1]
    assert line.startswith("error: ") and "unexpected" not in line and "Traceback" not in line, line
    for word in words:
        assert word in line, line
    assert outcome.seconds < SECONDS, outcome.seconds
    assert outcome.peak_mb < MEGABYTES, outcome.peak_mb
    return line


def snapshot(*folders: Path) -> dict[str, tuple]:
    """Every entry under ``folders`` (or a file given): kind, size, modification time and, for files, content hash."""
    seen = {}
    for folder in folders:
        if folder.is_file():
            st = folder.stat()
            seen[str(folder)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(folder.read_bytes()).hexdigest(),
            )
            continue
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = Path(root) / name
                st = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
                seen[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return seen
