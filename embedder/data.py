"""Image folder -> samples: robust decoding, stratified splits, and the bundled digits demo set."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import EmbedderError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Refuse decompression bombs with a clear message instead of PIL's warning-then-error.
Image.MAX_IMAGE_PIXELS = 120_000_000


@dataclass
class ImageSet:
    """A labelled image folder after scanning. ``paths[i]`` has class ``classes[labels[i]]``."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 indices into classes
    classes: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per image
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(
            root=self.root,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            classes=self.classes,
            sizes=[self.sizes[i] for i in idx] if self.sizes else [],
        )

    def skipped_message(self) -> str | None:
        """One warning line naming the skipped files, or None when nothing was skipped."""
        if not self.skipped:
            return None
        names = ", ".join(str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p, _ in self.skipped[:5])
        more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return f"skipped {len(self.skipped)} unreadable image(s): {names}{more}"


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is flattened onto white; 16/32-bit greyscale is rescaled to 8 bits."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0  # full 16-bit range onto 0..255
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(source: str | os.PathLike | bytes | io.IOBase, min_side: int | None = None) -> Image.Image:
    """Decode an image file (path, bytes or file object) to an upright RGB image.

    With ``min_side``, a JPEG may be decoded at a reduced scale (still at least that many pixels on
    each side), which is several times faster for photos; used for training, never for the gallery.

    Raises:
        EmbedderError: the data is not a readable image.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as img:
            if min_side:
                img.draft("RGB", (min_side, min_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        name = getattr(source, "name", None) or (str(source) if isinstance(source, (str, os.PathLike)) else "upload")
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise EmbedderError(f"not a readable image: {Path(name).name} ({reason})") from None


def _check_image(path: Path) -> tuple[int, int]:
    """Fully decode (JPEGs at reduced scale, which is fast) to catch truncated files; return the upright size."""
    with Image.open(path) as img:
        size = img.size
        orientation = img.getexif().get(0x0112, 1)
        img.draft("RGB", (64, 64))
        img.load()
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_folder(root: str | os.PathLike, progress: Callable[[int, int], None] | None = None) -> ImageSet:
    """Read an ImageFolder tree ``root/<label>/<image>``.

    Hidden entries and non-image files are ignored; unreadable images are skipped and listed in
    ``ImageSet.skipped``. Classes are the sorted names of the sub-folders that hold at least one image.

    Raises:
        EmbedderError: the folder is missing, holds no readable image, or fewer than two classes.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EmbedderError(f"data folder not found: {root}")
    candidates: list[tuple[Path, str]] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if is_image_file(path):
                    candidates.append((path, class_dir.name))
    if not candidates:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = " (images must sit in one sub-folder per label: root/<label>/<image>)" if loose else ""
        raise EmbedderError(f"no images found in {root}{hint}")

    paths, names, sizes, skipped = [], [], [], []
    for i, (path, label) in enumerate(candidates):
        try:
            sizes.append(_check_image(path))
            paths.append(path)
            names.append(label)
        except Exception as exc:  # PIL raises many types for broken files; all mean "skip it"
            skipped.append((path, str(exc).split("\n")[0] or type(exc).__name__))
        if progress is not None:
            progress(i + 1, len(candidates))
    if not paths:
        raise EmbedderError(f"no readable images in {root} ({len(skipped)} file(s) could not be decoded)")
    classes = sorted(set(names))
    if len(classes) < 2:
        raise EmbedderError(f"need at least 2 classes (sub-folders with images) in {root}, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return ImageSet(root=root, paths=paths, labels=labels, classes=classes, sizes=sizes, skipped=skipped)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class: ``round(n * fraction)`` of each class go to the second part.

    A class always keeps at least one item in the first part (it must stay in the gallery), so a
    class with a single image is never held out. Same labels and seed -> same split.

    Returns:
        (kept, held_out): sorted index arrays.
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_held = min(len(idx) - 1, int(round(len(idx) * fraction)))
        held.extend(idx[:n_held])
        kept.extend(idx[n_held:])
    return np.sort(np.array(kept, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMBEDDER_CACHE", Path.home() / ".cache" / "embedder"))


def demo_dataset(cache_dir: str | os.PathLike | None = None) -> Path:
    """scikit-learn's bundled digits (1,797 images, 10 classes) as PNG files in ImageFolder layout.

    Written once into ``cache_dir/digits`` (atomically, so a killed first run leaves nothing half-written);
    each 8x8 image is scaled to 32x32 with nearest-neighbour, dark ink on white, named ``<digit>/<index>.png``.
    """
    from sklearn.datasets import load_digits

    target = Path(cache_dir or default_cache_dir()) / "digits"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=target.parent))
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = (255 - image * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 ink -> dark on white
        folder = tmp / str(label)
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.NEAREST).save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text(f"{len(digits.images)}\n")
    if target.exists():
        shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_data(data: str) -> Path:
    """``"demo"`` -> the cached digits folder; anything else is taken as a path."""
    return demo_dataset() if data == "demo" else Path(data).expanduser().resolve()
