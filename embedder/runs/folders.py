"""Folders the program writes: what it may replace, how it swaps a new folder into place, file checksums.

The rule: never delete or overwrite what the program did not create. A folder is ours when it carries the
marker file and holds nothing but the files we write into it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
from pathlib import Path

MARKER = ".embedder-run"  # written into every run bundle; a folder without it is never replaced


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def foreign_entries(folder: Path, ours: frozenset[str]) -> list[str]:
    """Names in ``folder`` that the program would not have written there."""
    return sorted(p.name for p in folder.iterdir() if p.name not in ours)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the platform or file system cannot, so the caller falls back to two renames.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, getattr(errno, "ENOTSUP", errno.EINVAL)):
        return False
    raise OSError(err, os.strerror(err), str(b))


def old_copies(out: Path) -> list[Path]:
    """Previous versions of ``out`` set aside by an interrupted two-rename swap, newest first."""
    found = [p for p in out.parent.glob(f".{out.name}.old-*") if (p / "config.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover(out: Path) -> None:
    """After a crash between the two renames of a fallback swap, put the previous folder back."""
    if not out.exists():
        previous = old_copies(out)
        if previous:
            os.replace(previous[0], out)


def swap_into_place(new: Path, out: Path) -> None:
    """Make the complete folder ``new`` appear at ``out``; the previous ``out`` (if any) is deleted.

    Atomic where the kernel can exchange two folders: ``out`` always names a complete folder. Elsewhere
    two renames are needed; a crash between them leaves ``out`` missing and ``.{name}.old-*`` beside it,
    which ``recover`` puts back on the next load or write.
    """
    recover(out)
    if not out.exists():
        os.replace(new, out)
        return
    if _exchange(new, out):  # ``new`` now holds the previous folder
        shutil.rmtree(new, ignore_errors=True)
        return
    old = new.with_name(f".{out.name}.old-{new.name.rsplit('-', 1)[-1]}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
