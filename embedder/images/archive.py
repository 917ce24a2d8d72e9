"""Unpack an uploaded .zip of class folders into an ImageFolder, safely.

Only image files are written. An archive with entries that would land outside the target (``../``, absolute
paths, drive letters), symbolic links, duplicate names, a file and a folder of one name, encrypted entries,
control characters or names too long for a file system is refused whole: it is not an honest dataset. macOS
resource forks (``__MACOSX/``) and hidden files are skipped silently.

``ZipLimits`` are checked on the central directory before anything is written, and each entry's bytes are
counted as they are written. The archive is unpacked into a temporary folder beside ``dest`` and renamed into
place, so whatever goes wrong, nothing this call wrote is left behind.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import EmbedderError, one_line
from .data import is_image_file

MAX_NAME_BYTES = 255  # one file or folder name, on most file systems
MAX_PATH_BYTES = 4095  # a whole path: Linux's PATH_MAX less the closing NUL
_DIRECTORY_BYTES_PER_ENTRY = 256  # generous for a central-directory record: 46 bytes, the name, a few extras


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded archive may unpack to. The defaults fit a 200,000-photo dataset, not a zip bomb."""

    max_total_bytes: int = 2 * 1024**3  # every entry's declared size together, images or not
    max_ratio: float = 100.0  # unpacked : packed, per entry and for the whole archive (photos are ~1:1, bombs 1000:1)
    max_entries: int = 200_000  # entries of any kind, folders included
    ratio_exempt_bytes: int = 1024**2  # entries (and archives) smaller than this may compress better: blank bitmaps do


def _size(n: int) -> str:
    return f"{n / 1024**3:.3g} GiB" if n >= 1024**3 else f"{n / 1024**2:.3g} MiB"


def _open_zip(source: bytes | str | os.PathLike, limits: ZipLimits) -> tuple[zipfile.ZipFile, int]:
    """The archive and its size in bytes, once its central directory is known to be small enough to parse."""
    try:
        if isinstance(source, (bytes, bytearray)):
            fp = io.BytesIO(source)
            _check_directory(fp, limits)
            return zipfile.ZipFile(fp), len(source)
        if not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO would block the read forever
            raise EmbedderError(f"not a readable .zip archive: {one_line(str(source), 80)} is not a regular file")
        with open(source, "rb") as fp:
            _check_directory(fp, limits)
        return zipfile.ZipFile(source), os.path.getsize(source)
    except EmbedderError:
        raise
    except UnicodeDecodeError:
        raise EmbedderError("not a readable .zip archive (an entry name is not valid UTF-8)") from None
    except Exception as exc:  # zipfile raises BadZipFile, OSError, ValueError, ... for damaged archives
        raise EmbedderError(f"not a readable .zip archive ({_why(exc)})") from None


def _check_directory(fp, limits: ZipLimits) -> None:
    """Refuse a central directory too big for ``max_entries`` before zipfile builds an object for each record."""
    end = zipfile._EndRecData(fp)  # private but unchanged since Python 2: the end-of-central-directory record
    if end is None:
        return  # zipfile says what is wrong
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > limits.max_entries or size > limits.max_entries * _DIRECTORY_BYTES_PER_ENTRY:
        raise EmbedderError(f"archive too large: more than {limits.max_entries:,} entries (the limit)")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(str(exc).split("\n")[0], 80) or type(exc).__name__


def _check_limits(infos: list[zipfile.ZipInfo], archive_bytes: int, limits: ZipLimits) -> None:
    """Entry count, declared total size and compression ratios, from the central directory alone."""
    if len(infos) > limits.max_entries:
        raise EmbedderError(f"archive too large: {len(infos):,} entries (limit {limits.max_entries:,})")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise EmbedderError(f"archive too large: unpacks to {_size(total)} (limit {_size(limits.max_total_bytes)})")
    if total > limits.ratio_exempt_bytes and total > limits.max_ratio * archive_bytes:
        raise EmbedderError(
            f"archive refused: it unpacks to {total / archive_bytes:,.0f} times its size "
            f"(limit {limits.max_ratio:g}:1; zip bombs look like this)"
        )
    for i in infos:
        if i.file_size > limits.ratio_exempt_bytes and i.file_size > limits.max_ratio * max(1, i.compress_size):
            raise EmbedderError(
                f"archive refused: {one_line(i.filename, 80)} unpacks to "
                f"{i.file_size / max(1, i.compress_size):,.0f} times its packed size "
                f"(limit {limits.max_ratio:g}:1; zip bombs look like this)"
            )


def _member_path(name: str) -> PurePosixPath | None:
    """The relative path an entry may be written to, None to skip it.

    Raises:
        EmbedderError: the entry points outside the target folder.
    """
    path = PurePosixPath(name.replace("\\", "/"))  # archives made on Windows may use backslashes
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise EmbedderError(
            f"unsafe path in archive: {one_line(name, 80)} (entries must stay inside the archive's folder)"
        )
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return None
    return path


def _images(infos: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The entries to write, each with its relative path; links anywhere refuse the archive."""
    members = []
    for info in infos:
        if stat.S_ISLNK(info.external_attr >> 16):
            raise EmbedderError(f"unsafe entry in archive: {one_line(info.filename, 80)} is a symbolic link")
        if info.is_dir():
            continue
        path = _member_path(info.filename)
        if path is not None and is_image_file(Path(path.name)):
            members.append((info, path))
    if not members:
        raise EmbedderError("no images in the archive: expected one folder per label (<label>/<image>)")
    return members


def _check_names(members: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path) -> None:
    """Refuse what the file system would reject or silently merge, before the first byte is written."""
    files, folders = set(), set()
    for info, path in members:
        name = one_line(info.filename, 80)
        if info.flag_bits & 0x1:
            raise EmbedderError(f"cannot unpack {name}: it is encrypted (zip the images again without a password)")
        if any(unicodedata.category(c) == "Cc" for c in info.filename):
            raise EmbedderError(f"unsafe name in archive: {name} (it holds control characters)")
        if any(len(part.encode()) > MAX_NAME_BYTES for part in path.parts):
            raise EmbedderError(f"name too long in archive: {name} (at most {MAX_NAME_BYTES} bytes per name)")
        if len(os.fsencode(dest)) + 1 + len(str(path).encode()) > MAX_PATH_BYTES:
            raise EmbedderError(f"path too long in archive: {name} (at most {MAX_PATH_BYTES} bytes once unpacked)")
        if path in files:
            raise EmbedderError(f"archive lists {name} twice")
        files.add(path)
        folders.update(path.parents)
    clash = sorted(files & folders)
    if clash:
        raise EmbedderError(f"archive holds both a file and a folder named {one_line(str(clash[0]), 80)}")


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Stream one entry into ``target``, which must not exist yet, counting the bytes: no more than the header
    declared may come out, and the declared sizes together were checked against ``max_total_bytes``. (zipfile
    itself stops at the declared size and then fails the CRC; this check does not depend on it.)"""
    written = 0
    with zf.open(info) as src, open(target, "xb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > info.file_size:
                raise EmbedderError(
                    f"cannot unpack {one_line(info.filename, 80)}: it holds more than the "
                    f"{info.file_size:,} bytes its header declares"
                )
            out.write(chunk)


def _write(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]], root: Path) -> None:
    for info, path in members:
        target = root.joinpath(*path.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(zf, info, target)
        except EmbedderError:
            raise
        except Exception as exc:  # zipfile, zlib, bz2 and lzma raise many types for damaged or lying entries
            raise EmbedderError(f"cannot unpack {one_line(info.filename, 80)}: {_why(exc)}") from None


def _make_folders(folder: Path, made: list[Path]) -> None:
    """``mkdir -p`` that notes each folder it makes in ``made``, deepest first, so a failure (even its own) can
    take exactly those away again."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        made.insert(0, new)


def image_root(folder: Path) -> Path:
    """Step down through single wrapper folders (``data.zip`` -> ``data/<label>/...``) to the class folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        subdirs = [p for p in entries if p.is_dir()]
        if len(subdirs) != 1 or len(entries) != 1 or not any(p.is_dir() for p in subdirs[0].iterdir()):
            return folder
        folder = subdirs[0]


def extract_zip(source: bytes | str | os.PathLike, dest: str | os.PathLike, limits: ZipLimits = ZipLimits()) -> Path:
    """Extract the images of a .zip (bytes or a path) into ``dest`` and return the ImageFolder root.

    ``dest`` must not exist yet or be an empty folder. On any failure nothing this call wrote is left: not the
    unpacked files, not ``dest``, not the parent folders it had to create.

    Raises:
        EmbedderError: one line: not a zip, an unsafe or clashing entry, over a limit, or no image inside.
    """
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise EmbedderError(f"cannot unpack into {dest}: it already exists and is not an empty folder")
    zf, archive_bytes = _open_zip(source, limits)
    with zf:
        infos = zf.infolist()
        _check_limits(infos, archive_bytes, limits)
        members = _images(infos)
        _check_names(members, dest)
        made: list[Path] = []
        tmp = None
        try:
            _make_folders(dest.parent, made)
            tmp = Path(tempfile.mkdtemp(prefix=".unzip-", dir=dest.parent))
            _write(zf, members, tmp)
            os.replace(tmp, dest)  # an empty dest is replaced; anything else fails and is cleaned below
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in made:  # deepest first; one that something else wrote into meanwhile stays
                try:
                    folder.rmdir()
                except OSError:
                    break
            if isinstance(exc, OSError):
                raise EmbedderError(f"cannot unpack into {dest}: {_why(exc)}") from None
            raise
    return image_root(dest)
