"""Writing a run's files so that the machine's refusals (a full disk, a quota, a read-only file system, a file-size
limit) reach the user as one line naming the cause and the run, and nothing half-written stays behind.

torch.save reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] unexpected pos", given a path
or an open file; ``save_torch`` writes its bytes itself, so the OSError comes through. Annoy prints its own failure
on stderr before it raises; ``c_stderr_quiet`` keeps that line out of the one the user gets.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import EmbedderError

REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this system's file-size limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
}
_ERRNO_IN_TEXT = re.compile(r"\((\d+)\)\s*$")  # Annoy: "Unable to write: No space left on device (28)"


class WriteRefused(EmbedderError):
    """The operating system refused a write; the message names the cause and what was being written."""


def reason(exc: OSError) -> str:
    """The cause of ``exc`` in a few lower-case words: "no space left on device"."""
    code = exc.errno
    if code is None:
        found = _ERRNO_IN_TEXT.search(str(exc))
        code = int(found.group(1)) if found else None
    if code in REASONS:
        return REASONS[code]
    return (exc.strerror or (os.strerror(code) if code else str(exc)) or type(exc).__name__).lower()


@contextlib.contextmanager
def refusals_named(what: str | os.PathLike, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Turn an OSError in the block into ``WriteRefused("no space left on device writing WHAT")``, after
    ``cleanup`` has removed what the block left half-written."""
    try:
        yield
    except OSError as exc:
        cleanup()
        raise WriteRefused(f"{reason(exc)} writing {what}") from None


def save_torch(obj, path: Path) -> None:
    """``torch.save`` into memory, then the bytes to ``path``: a full disk raises the OSError that says so (torch's
    own writer, given a path or a file, reports a short write as "unexpected pos"). Costs one copy of ``obj``'s
    bytes for the moment of the write."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


@contextlib.contextmanager
def c_stderr_quiet() -> Iterator[None]:
    """Hold back what C code prints on stderr (file descriptor 2) during the block, and print it afterwards
    unless the block failed: a library that prints its own failure would add a second line to ours."""
    try:
        held = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the with below)
    except OSError:  # no room even for an empty temporary file: let it print
        yield
        return
    with held:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)
