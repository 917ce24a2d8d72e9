"""The child process that runs an imported ONNX graph (sandbox.py starts it): a graph from a stranger may loop for
ever, allocate without end or crash, and here that costs only this process.

Started as a script (``python -I worker.py SECONDS MEGABYTES THREADS``), not as a module of the package, so it
imports nothing but the standard library, numpy and onnxruntime (not torch: start-up stays well under a second).
Before it reads a byte of the model it limits itself: its data segment (RLIMIT_DATA: every heap and anonymous
mapping onnxruntime makes) to MEGABYTES, the files it may write to none, core dumps off; it dies with its parent
(PR_SET_PDEATHSIG), and before each request it allows itself SECONDS x THREADS more seconds of CPU (RLIMIT_CPU:
SIGXCPU ends it, even when its parent is gone). It runs in an empty private folder, so a path in a graph finds
nothing. The parent keeps the wall-clock deadline.

Protocol, one request at a time: a JSON line, then the number of bytes it announces; the same for the answer.
    {"op": "load", "bytes": n} + the model            -> {"ok": true}
    {"op": "run", "input": name, "output": name, "dtype": "float32", "shape": [B, ...], "bytes": n} + the array
                                                      -> {"ok": true, "shape": [B, D], "bytes": 4*B*D} + float32
    a failure                                         -> {"ok": false, "kind": "memory" | "shape" | "error",
                                                          "message": one line}
Arrays travel as raw bytes of a declared dtype and shape: nothing is ever unpickled.
"""

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

MAX_HEADER = 1 << 16
_ALLOCATION_WORDS = ("bad_alloc", "bad allocation", "failed to allocate", "cannot allocate", "out of memory")


def _limit(megabytes: int, parent: int) -> None:
    data = megabytes * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (data, data))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no operator writes files; a graph never will
    # PR_SET_PDEATHSIG; where there is no prctl, stdin's end (the parent gone) ends the loop between requests
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took hold
        sys.exit(0)


def _allow_cpu(seconds: float) -> None:
    """Let the next request use ``seconds`` more CPU seconds (SIGXCPU past that ends this process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def _read(stream, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        sys.exit(0)  # the parent went away mid-request
    return data


def _answer(out, head: dict, payload: bytes = b"") -> None:
    out.write(json.dumps({**head, "bytes": len(payload)}).encode() + b"\n")
    out.write(payload)
    out.flush()


def _load(data: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: between requests the cores are the parent's (the search that follows)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _run(session, head: dict, payload: bytes, max_dim: int):
    import numpy as np

    batch = np.frombuffer(payload, dtype=np.dtype(head["dtype"])).reshape(head["shape"])
    out = np.asarray(session.run([head["output"]], {head["input"]: batch})[0])
    n = len(batch)
    if out.ndim == 0 or out.shape[0] != n or out.size % max(n, 1):
        raise ValueError(f"it returned shape {list(out.shape)} for {n} images")
    if out.size // max(n, 1) > max_dim:
        raise OverflowError(f"it outputs {out.size // n} values per image: an embedding needs 2 to {max_dim}")
    return np.ascontiguousarray(out.reshape(n, -1), dtype=np.float32)


def _failure(exc: BaseException) -> dict:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    memory = isinstance(exc, MemoryError) or any(w in text.lower() for w in _ALLOCATION_WORDS)
    kind = "memory" if memory else "shape" if isinstance(exc, OverflowError) else "error"
    return {"ok": False, "kind": kind, "message": text[:300]}


def main() -> None:
    seconds, megabytes, threads, max_dim = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
    _limit(megabytes, int(sys.argv[4]))
    stdin, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of a library go to stderr, never into the answers
    session = None
    while True:
        line = stdin.readline(MAX_HEADER)
        if not line:
            return  # the parent closed the pipe
        head = json.loads(line)
        payload = _read(stdin, int(head["bytes"]))
        _allow_cpu(seconds * threads)
        try:
            if head["op"] == "load":
                session = _load(payload, threads)
                _answer(out, {"ok": True})
            else:
                z = _run(session, head, payload, max_dim)
                _answer(out, {"ok": True, "shape": list(z.shape)}, z.tobytes())
        except Exception as exc:  # the graph's failure is an answer; this process goes on
            del payload
            _answer(out, _failure(exc))


if __name__ == "__main__":
    main()
