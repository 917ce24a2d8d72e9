"""Labels out as an ImageFolder (``<out>/<label>/<file>``) of links to, or copies of, the labelled files, or as a
.zip of copies for a browser to download. The labelled files themselves are only ever read.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

from ..errors import EmbedderError
from .data import is_inside
from .labels import check_label


def _targets(pairs: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """(file, "<label>/<name>") for each pair; a name taken twice in one label gets the file's folder in front."""
    seen: set[str] = set()
    out = []
    for path, label in pairs:
        name = f"{check_label(label)}/{path.name}"
        if name in seen:
            name = f"{label}/{path.parent.name}-{path.name}"
        if name in seen:
            raise EmbedderError(f"two labelled files would both be exported as {name}")
        seen.add(name)
        out.append((path, name))
    return out


def write_imagefolder(pairs: list[tuple[Path, str]], out: Path, copy: bool = False) -> int:
    """An ImageFolder at ``out`` (a new or empty folder) holding each file under its label: a symbolic link to it,
    or with ``copy`` a copy. Returns how many files it holds.

    Raises:
        EmbedderError: ``out`` holds files already, lies inside a labelled file's folder tree, or a label cannot
        name a folder.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmbedderError(f"{out} exists and is not an empty folder: choose a new one")
    targets = _targets([(Path(p).resolve(), label) for p, label in pairs])
    for path, _ in targets:
        if is_inside(out, path.parent):
            raise EmbedderError(f"{out} lies inside the labelled images' folder {path.parent}: choose another")
    for path, name in targets:
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(path, dest)
        else:
            os.symlink(path, dest)
    return len(targets)


def imagefolder_zip(pairs: list[tuple[Path, str]], prefix: str = "labelled") -> bytes:
    """A .zip of copies of the files, ``<prefix>/<label>/<file>``: the ImageFolder a browser downloads."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # images are compressed already
        for path, name in _targets([(Path(p), label) for p, label in pairs]):
            zf.write(path, f"{prefix}/{name}")
    return buf.getvalue()
