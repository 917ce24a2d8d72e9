"""Image bytes -> an upright RGB image, within a pixel budget checked before anything is decoded.

Only regular files are read (a FIFO named ``x.jpg`` would block forever), a header promising more than
``max_pixels()`` pixels is refused unless a JPEG can decode at 1/2, 1/4 or 1/8 scale under it, and each failure
becomes a short reason a user understands ("truncated", "not an image", "too large (…)").
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from ..errors import EmbedderError, UnreadableImage, one_line

# Decode budget, checked on the header before any pixel is decoded: a blank 15000×15000 PNG is 220 KB on disk
# and 900 MB in memory. 50 MP is a 8660×5773 photo; EMBEDDER_MAX_PIXELS overrides it (up to the backstop).
MAX_PIXELS = 50_000_000
# Backstop for code that opens images without that check: PIL warns above this and refuses above twice it.
Image.MAX_IMAGE_PIXELS = 120_000_000
# PIL warns (on stderr) about damaged metadata and big images; a damaged file gets our one line instead.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Decoders for the documented extensions only (the JPEG opener also reads phone cameras' MPO): PIL would also
# open an EPS named x.jpg by running Ghostscript on it, and try a dozen rarely used decoders besides.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF")
_ORIENTATION = 0x0112  # EXIF tag: how to turn the stored pixels to display them upright
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class _Unusable(Exception):
    """Why one file cannot be used, as a short phrase: "truncated", "not a regular file (named pipe)", ..."""


def max_pixels() -> int:
    """The decode budget: ``EMBEDDER_MAX_PIXELS`` when set, else ``MAX_PIXELS``; never above PIL's backstop.

    Raises:
        EmbedderError: the variable is set to something that is not a positive number.
    """
    raw = os.environ.get("EMBEDDER_MAX_PIXELS", "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        value = int(float(raw))  # "8e7" is a fine way to write it
    except (ValueError, OverflowError):
        value = 0
    if value <= 0:
        raise EmbedderError(f"EMBEDDER_MAX_PIXELS must be a positive number of pixels, got {one_line(raw, 40)!r}")
    return min(value, Image.MAX_IMAGE_PIXELS)


def skip_reason(exc: BaseException) -> str:
    """The short phrase a user understands for why PIL or the OS could not read a file."""
    if isinstance(exc, _Unusable):
        return str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:g} MP)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, PermissionError):
        return "unreadable (permission denied)"
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return "truncated"
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreadable ({exc.strerror.lower()})"
    detail = one_line(str(exc).split("\n")[0], 60)
    return f"damaged ({detail})" if detail else f"damaged ({type(exc).__name__})"


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket")]
    return next((kind for test, kind in kinds if test(mode)), "device")


def _open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """Open ``path`` for reading only if it is a regular file (symlinks followed): reading a FIFO or a device
    named ``x.jpg`` would block forever or never end."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            # O_NONBLOCK: should the path become a FIFO after the stat, open returns at once and fstat sees it.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                return os.fdopen(fd, "rb")
            os.close(fd)
    except OSError as exc:
        raise _Unusable(skip_reason(exc)) from None
    raise _Unusable(f"not a regular file ({_file_kind(mode)})")


def _fit_budget(img: Image.Image, want: tuple[int, int] | None, limit: int) -> None:
    """Refuse an image whose header promises more than ``limit`` pixels, before anything is decoded.

    A JPEG is first asked (``draft``) to decode at 1/2, 1/4 or 1/8 scale when that brings it under the budget,
    or when the caller only ``want``s a smaller copy anyway.
    """
    w, h = img.size
    if w <= 0 or h <= 0:
        raise _Unusable(f"empty ({w}×{h} pixels)")
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        scale = next((s for s in (1, 2, 4, 8) if -(-w // s) * -(-h // s) <= limit), 8)
        ask = (max(1, w // scale), max(1, h // scale))
        if want:
            ask = (min(ask[0], want[0]), min(ask[1], want[1]))
        if ask != (w, h):
            img.draft("RGB", ask)
    if img.width * img.height > limit:
        raise _Unusable(f"too large ({w}×{h} pixels, limit {limit / 1e6:g} MP)")


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block should not cost the picture: show it as stored
        return 1


def _target_size(size: tuple[int, int], min_side: int | None, max_side: int | None) -> tuple[int, int] | None:
    """The size that makes the short side ``min_side`` and the long side at most ``max_side``; None: keep it."""
    w, h = size
    scale = min(min_side / min(w, h) if min_side else 1.0, max_side / max(w, h) if max_side else 1.0)
    if scale >= 1:
        return None
    return max(1, round(w * scale)), max(1, round(h * scale))


def _shrink(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.mode not in ("RGB", "RGBA", "L", "LA", "I", "F"):
        img = to_rgb(img)  # resize can't average palette indices, 1-bit or 16-bit pixels
    return img.resize(size, Image.BILINEAR)


def _decode(fp, limit: int, min_side: int | None, max_side: int | None) -> Image.Image:
    """One decode with at most one full-size copy alive: every step drops the image it replaces."""
    img = Image.open(fp, formats=FORMATS)
    want = _target_size(img.size, min_side, max_side) if min(img.size) > 0 else None
    _fit_budget(img, want, limit)
    img.load()
    turn = _TRANSPOSE.get(_orientation(img))
    size = _target_size(img.size, min_side, max_side)
    if size:
        img = _shrink(img, size)
    if turn is not None:
        img = img.transpose(turn)
    return to_rgb(img)


def _message(name: str | None, reason: str) -> str:
    """``load_image``'s one line: "not a readable image: x.jpg (truncated)", "too large: x.png (…)"."""
    head, _, detail = reason.partition(" (")
    if head not in ("too large", "not a regular file"):
        head, detail = "not a readable image", reason + ")"
    return f"{head}: {name} ({detail}" if name else f"{head} ({detail}"


def _source_name(source) -> str | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    return one_line(Path(os.fsdecode(name)).name, 100) if isinstance(name, (str, bytes, os.PathLike)) else None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is flattened onto white; 16/32-bit greyscale is rescaled to 8 bits.

    An RGB image is returned as it is, not copied: a 50 MP photo is 200 MB in memory.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # an RGBA mask means its alpha band, without copying it out
        return background
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.array(img, dtype=np.float32)  # a writable float32 copy, then in place: not four float64 copies
        if img.mode.startswith("I;16"):
            arr /= 257.0  # full 16-bit range onto 0..255
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr -= lo
            arr *= 255.0 / (hi - lo) if hi > lo else 0.0
        np.clip(arr, 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(
    source: str | os.PathLike | bytes | io.IOBase, min_side: int | None = None, max_side: int | None = None
) -> Image.Image:
    """Decode an image file (path, bytes or file object) to an upright RGB image.

    Only a regular file is read, and the header's size is checked against ``max_pixels()`` before any pixel is
    decoded; a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale when that fits, so it comes back smaller.

    Args:
        min_side: shrink so the short side is this many pixels (never enlarged): model input for training.
        max_side: shrink so the long side is at most this many pixels: thumbnails. With either, a JPEG is
            decoded at a reduced scale where it can be, and a big decode is dropped as soon as it is shrunk.

    Raises:
        UnreadableImage: one line, e.g. "not a readable image: x.jpg (truncated)", "too large: x.png (15000×15000
            pixels, limit 50 MP)", "not a regular file: x.jpg (named pipe)".
    """
    limit = max_pixels()
    try:
        if isinstance(source, (str, os.PathLike)):
            with _open_regular(source) as fp:
                return _decode(fp, limit, min_side, max_side)
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        return _decode(fp, limit, min_side, max_side)
    except Exception as exc:  # PIL raises many types for damaged data; each becomes one line
        reason = skip_reason(exc)
        raise UnreadableImage(_message(_source_name(source), reason), reason) from None


def check_image(path: Path, limit: int) -> tuple[int, int]:
    """Fully decode (JPEGs at reduced scale, which is fast) to catch truncated files; return the upright size."""
    with _open_regular(path) as fp:
        img = Image.open(fp, formats=FORMATS)
        size = img.size
        _fit_budget(img, (64, 64), limit)
        img.load()
        orientation = _orientation(img)
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
