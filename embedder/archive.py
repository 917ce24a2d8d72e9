"""Unpack an uploaded .zip of class folders into an ImageFolder, safely.

Only image files are written. Entries that would land outside the target (``../``, absolute paths, drive
letters) and symbolic links make the whole archive refused: an archive built that way is not an honest
dataset. macOS resource forks (``__MACOSX/``) and hidden files are skipped silently.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .data import is_image_file
from .errors import EmbedderError

MAX_UNPACKED_BYTES = 4 * 1024**3  # refuse zip bombs before writing anything
MAX_FILES = 500_000


def _member_path(name: str) -> PurePosixPath | None:
    """The relative path an entry may be written to, None to skip it.

    Raises:
        EmbedderError: the entry points outside the target folder.
    """
    path = PurePosixPath(name.replace("\\", "/"))  # archives made on Windows may use backslashes
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise EmbedderError(f"unsafe path in archive: {name} (entries must stay inside the archive's folder)")
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return None
    return path


def image_root(folder: Path) -> Path:
    """Step down through single wrapper folders (``data.zip`` -> ``data/<label>/...``) to the class folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        subdirs = [p for p in entries if p.is_dir()]
        if len(subdirs) != 1 or len(entries) != 1 or not any(p.is_dir() for p in subdirs[0].iterdir()):
            return folder
        folder = subdirs[0]


def extract_zip(source: bytes | str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract the images of a .zip (bytes or a path) into ``dest`` and return the ImageFolder root.

    Raises:
        EmbedderError: not a zip, an unsafe entry, too big when unpacked, or no image inside.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EmbedderError(f"not a readable .zip archive ({exc})") from None
    with zf:
        members = []
        for info in zf.infolist():
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise EmbedderError(f"unsafe entry in archive: {info.filename} is a symbolic link")
            path = _member_path(info.filename)
            if path is not None and is_image_file(Path(path.name)):
                members.append((info, path))
        if not members:
            raise EmbedderError("no images in the archive: expected one folder per label (<label>/<image>)")
        if len(members) > MAX_FILES or sum(i.file_size for i, _ in members) > MAX_UNPACKED_BYTES:
            raise EmbedderError(
                f"archive too large: at most {MAX_FILES} images and {MAX_UNPACKED_BYTES // 1024**3} GiB unpacked"
            )
        dest.mkdir(parents=True, exist_ok=True)
        for info, path in members:
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError) as exc:
                # RuntimeError: encrypted entries; BadZipFile: CRC mismatch in a damaged archive.
                raise EmbedderError(f"cannot unpack {info.filename}: {exc}") from None
    return image_root(dest)
