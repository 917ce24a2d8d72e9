"""Every file of a run read within bounds, before anything is allocated for it: a run folder may come from anywhere
(copied, downloaded, edited by hand), so its files are inputs like any other.

- JSON: at most ``JSON_MB`` megabytes a file (read from its size on disk first) and ``MAX_DEPTH`` levels of
  nesting (Python's parser would otherwise stop at its recursion limit with a RecursionError).
- .npz: the archive's directory and each array's .npy header are read first; an array is loaded only when it is
  stored (or compressed no more than ``MAX_RATIO``:1, against a zip bomb), its header's shape and dtype account for
  exactly the bytes the archive declares, and its dtype is one the run writes. A header that declares a 36 TiB
  array, or a member that inflates to gigabytes, is refused having read a few hundred bytes.
- Paths the gallery or split.json name resolve inside the run's data root (or a folder ``add`` recorded).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

JSON_MB = {"config.json": 64, "history.json": 16, "metrics.json": 64, "split.json": 1024, "checksums.json": 1}
MAX_DEPTH = 32  # the deepest of the program's own files is metrics.json, at 6
MAX_RATIO = 100  # uncompressed : compressed bytes of an .npz member (np.savez stores them: 1)
NPY_DTYPES = {"f": (2, 4, 8), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "U": None, "b": (1,)}  # kind -> item sizes


class Refused(ValueError):
    """A file outside its bounds; the message says which bound (bundle_read names the file and run)."""


def read_json(path: Path, name: str) -> Any:
    """``path`` parsed, within ``JSON_MB[name]`` and ``MAX_DEPTH``.

    Raises:
        Refused: too large, not valid JSON, or nested too deeply.
    """
    limit = JSON_MB[name] * 2**20
    size = path.stat().st_size
    if size > limit:
        raise Refused(f"{name} is {size / 2**20:.0f} MB, over the {JSON_MB[name]} MB a run's {name} may be")
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read(limit + 1))
    except RecursionError:
        raise Refused(f"{name} is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"{name} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if depth_over(value, MAX_DEPTH):
        raise Refused(f"{name} is nested more than {MAX_DEPTH} levels deep")
    return value


def depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (no recursion: any depth is safe)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


@dataclass(frozen=True)
class Member:
    """An array of an .npz archive as its headers describe it."""

    shape: tuple[int, ...]
    dtype: np.dtype


def npz_members(path: Path, max_dim: int) -> dict[str, Member]:
    """The arrays of the .npz at ``path``, from the zip directory and each .npy header, checked before loading.

    Raises:
        Refused: not a zip, a member compressed past ``MAX_RATIO``:1, a header that does not parse or does not
        account for the member's size, a dtype the run never writes (objects: pickles), a dimension of rank > 2
        or wider than ``max_dim``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename.removesuffix(".npy"): _member(archive, info, max_dim) for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, Refused):
            raise
        raise Refused("is not a readable .npz archive") from None


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_dim: int) -> Member:
    name = info.filename
    if info.file_size > MAX_RATIO * max(info.compress_size, 2**20):
        raise Refused(f"array {name!r} inflates {info.file_size / max(info.compress_size, 1):.0f}-fold (a zip bomb?)")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise Refused(f"array {name!r} has an unknown .npy version {version}")
        shape, fortran, dtype = read_header[version](f, max_header_size=10_000)
        header = f.tell()
    kind, sizes = dtype.kind, NPY_DTYPES.get(dtype.kind, ())
    if dtype.hasobject:
        raise Refused(f"holds pickled objects (array {name!r}), which are never loaded (they could run code)")
    if sizes == () or (sizes is not None and dtype.itemsize not in sizes) or fortran:
        raise Refused(f"array {name!r} has dtype {dtype.str}, which a run never writes")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] > max_dim) or (kind == "U" and dtype.itemsize > 4 * 4096):
        raise Refused(f"array {name!r} has shape {shape} and dtype {dtype.str}, which a run never writes")
    if header + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize != info.file_size:
        raise Refused(f"array {name!r} declares shape {shape}, which is not the {info.file_size:,} bytes it holds")
    return Member(tuple(shape), dtype)


def outside(paths: np.ndarray, roots: list[str]) -> str | None:
    """The first of ``paths`` (a string array: relative to ``roots[0]``, or absolute) that is not inside one of
    ``roots`` once '..' is resolved; None when all are. Vectorised: a million paths take a fraction of a second."""
    paths = np.asarray(paths, dtype=str)
    if not len(paths):
        return None
    absolute = np.strings.startswith(paths, "/")
    ups = (np.strings.find(paths, "..") >= 0) | np.strings.startswith(paths, "~")
    inside = ~absolute
    for root in roots:
        inside |= absolute & np.strings.startswith(paths, root.rstrip("/") + "/")
    for i in np.flatnonzero(ups | ~inside):  # few: the rest need no look
        if not _within(str(paths[i]), roots):
            return str(paths[i])
    return None


def _within(path: str, roots: list[str]) -> bool:
    full = os.path.normpath(path if path.startswith("/") else os.path.join(roots[0], path))
    return any(full == os.path.normpath(r) or full.startswith(os.path.normpath(r) + os.sep) for r in roots)
