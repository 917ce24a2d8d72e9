"""An imported ONNX graph run in a child process with limits (worker.py), so a graph that never ends, allocates
without end or crashes costs one line and that process, never the CLI, the app or its training slot.

One long-lived worker per loaded network, reused across calls (a query pays a pipe round trip, not a start-up),
one call at a time. Each call has a wall-clock deadline kept here; the worker holds its own memory and CPU-time
limits. A worker that missed its deadline is killed, and the next call starts a fresh one.

Environment:
    EMBEDDER_ONNX_SECONDS    the longest one call may take: loading the graph, or one batch (default 60)
    EMBEDDER_ONNX_MEMORY_MB  the worker's memory: its heap and every anonymous mapping, in MB (default 2048)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import MAX_DIM
from ..errors import EmbedderError, one_line

SECONDS_ENV, DEFAULT_SECONDS = "EMBEDDER_ONNX_SECONDS", 60.0
MEMORY_ENV, DEFAULT_MB = "EMBEDDER_ONNX_MEMORY_MB", 2048
WORKER = Path(__file__).with_name("worker.py")
_MAX_HEADER = 1 << 16


def _positive(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = 0
    if value <= 0:
        raise EmbedderError(f"{env} must be a positive number, got {one_line(raw, 40)!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one call of the worker may use: wall-clock seconds (and that many CPU seconds per thread), and MB of
    memory for the whole worker."""

    seconds: float = DEFAULT_SECONDS
    megabytes: int = DEFAULT_MB

    @classmethod
    def from_env(cls) -> Limits:
        return cls(_positive(SECONDS_ENV, DEFAULT_SECONDS), int(_positive(MEMORY_ENV, DEFAULT_MB)))


class _Worker:
    """The child process, its pipes and its private empty folder."""

    def __init__(self, limits: Limits, threads: int) -> None:
        self.folder = tempfile.mkdtemp(prefix="embedder-onnx-")
        args = [str(limits.seconds), str(limits.megabytes), str(threads), str(os.getpid()), str(MAX_DIM)]
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.folder,  # empty: a file name in a graph finds nothing
            env={"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": str(threads)},
            start_new_session=True,  # Ctrl-C in a terminal stops the parent, which ends this one
            bufsize=0,
        )
        self.pending = b""

    def stop(self) -> int | None:
        """End the process (at once: whatever it was doing is abandoned) and remove its folder; its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        code = self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        return code

    def send(self, data) -> None:
        """All of ``data`` to the worker (it reads a whole request before it starts on it)."""
        view = memoryview(data)
        while len(view):
            view = view[self.proc.stdin.write(view) :]

    def read(self, n: int, deadline: float, line: bool = False) -> bytes | None:
        """``n`` bytes (or, with ``line``, one line of at most ``n``) from the worker; None when it ended or the
        deadline passed first (``timed_out`` says which)."""
        self.timed_out = False
        fd = self.proc.stdout.fileno()
        while (line and b"\n" not in self.pending) or (not line and len(self.pending) < n):
            if line and len(self.pending) > n:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.timed_out = True
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.pending += chunk
        cut = self.pending.index(b"\n") + 1 if line else n
        data, self.pending = self.pending[:cut], self.pending[cut:]
        return data


def _shutdown(state: dict) -> None:
    worker = state.pop("worker", None)
    if worker is not None:
        worker.stop()


class Sandbox:
    """``model`` (an ONNX file's bytes, checked by ``model.parse``) run by onnxruntime in a worker process.

    Args:
        model: the file's bytes.
        name: how messages name it ("model.onnx of run photos").
        threads: onnxruntime's threads in the worker.
        limits: the deadline and memory of each call; ``Limits.from_env()`` when None.
    """

    def __init__(self, model: bytes, name: str, threads: int = 1, limits: Limits | None = None) -> None:
        self.model, self.name, self.threads = model, name, max(1, threads)
        self.limits = limits or Limits.from_env()
        self._lock = threading.Lock()
        self._state: dict = {}  # "worker": the live _Worker; shut down with this object or at exit
        weakref.finalize(self, _shutdown, self._state)

    def start(self) -> None:
        """Start the worker and load the graph now (else the first ``run`` does)."""
        with self._lock:
            self._ensure()

    def close(self) -> None:
        with self._lock:
            _shutdown(self._state)

    def run(self, batch: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
        """(B, ...) input -> (B, D) float32: the graph's ``output_name``, flattened per image.

        Raises:
            EmbedderError: the graph failed, ran past the deadline, used more memory than allowed, or its process
            ended; one line naming the model and the limit.
        """
        batch = np.ascontiguousarray(batch)
        head = {"op": "run", "input": input_name, "output": output_name, "dtype": batch.dtype.name}
        with self._lock:
            self._ensure()
            answer, data = self._ask({**head, "shape": list(batch.shape)}, memoryview(batch).cast("B"))
        shape = answer.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and shape[0] == len(batch)):
            raise EmbedderError(f"{self.name} returned a malformed answer")
        return np.frombuffer(data, dtype=np.float32).reshape(shape)

    def _ensure(self) -> None:
        if "worker" not in self._state:
            self._state["worker"] = _Worker(self.limits, self.threads)
            self._ask({"op": "load"}, self.model)

    def _ask(self, head: dict, payload) -> tuple[dict, bytes]:
        """Send one request; (its answer, the bytes that came with it) within the deadline."""
        worker, deadline = self._state["worker"], time.monotonic() + self.limits.seconds
        try:
            worker.send(json.dumps({**head, "bytes": len(payload)}).encode() + b"\n")
            worker.send(payload)
            line = worker.read(_MAX_HEADER, deadline, line=True)
            answer = json.loads(line) if line else None
            n = answer.get("bytes") if isinstance(answer, dict) else None
            data = worker.read(n, deadline) if isinstance(n, int) and 0 <= n <= self._most(head) else None
        except (BrokenPipeError, ValueError):
            answer = data = None
        if data is None:
            raise self._lost(worker)
        if not answer.get("ok"):
            raise self._failed(answer, head["op"])
        return answer, data

    def _most(self, head: dict) -> int:
        """The most bytes an answer to ``head`` may bring: B images of MAX_DIM float32 values."""
        return head.get("shape", [0])[0] * MAX_DIM * 4

    def _lost(self, worker: _Worker) -> EmbedderError:
        """The worker missed its deadline, ended or answered nonsense: stop it, and say which."""
        timed_out = getattr(worker, "timed_out", False)
        code = worker.stop()
        self._state.pop("worker", None)
        seconds, mb = f"{self.limits.seconds:g}", self.limits.megabytes
        if timed_out:
            return EmbedderError(f"{self.name} did not answer within {seconds} s ({SECONDS_ENV}): it was stopped")
        if code == -signal.SIGXCPU:
            return EmbedderError(f"{self.name} used more than {seconds} s of CPU time per thread: it was stopped")
        why = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return EmbedderError(
            f"{self.name} stopped its process ({why}); it may have needed more than its {mb} MB ({MEMORY_ENV})"
        )

    def _failed(self, answer: dict, op: str) -> EmbedderError:
        message = one_line(str(answer.get("message", "")), 160)
        if answer.get("kind") == "memory":
            _shutdown(self._state)  # a fresh worker for the next call, whatever the allocator's state now
            return EmbedderError(
                f"{self.name} used more than {self.limits.megabytes} MB of memory ({MEMORY_ENV}): it was stopped"
            )
        if op == "load":
            _shutdown(self._state)
            return EmbedderError(f"not a usable ONNX model: onnxruntime cannot run it ({message})")
        if answer.get("kind") == "shape":
            return EmbedderError(f"{self.name}: {message}")
        return EmbedderError(f"{self.name} failed on a batch: {message}")
