"""Image folder -> samples (each file checked, the unusable ones listed with a reason), stratified splits, and
the bundled digits demo set. Decoding itself lives in ``decode.py``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EmbedderError, one_line
from .decode import MAX_PIXELS, check_image, load_image, max_pixels, skip_reason, to_rgb  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, after resolving links and '..'."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def _category(reason: str) -> str:
    return reason.split(" (")[0]  # "too large (15000×15000 pixels, …)" counts as "too large"


@dataclass
class ImageSet:
    """A labelled image folder after scanning. ``paths[i]`` has class ``classes[labels[i]]``."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 indices into classes
    classes: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per image
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unusable files and why ("truncated", ...)
    empty_classes: list[str] = field(default_factory=list)  # class folders left out: no usable image inside

    def __len__(self) -> int:
        return len(self.paths)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def skipped_by_reason(self) -> dict[str, int]:
        """How many files were skipped for each kind of reason, most common first."""
        return dict(Counter(_category(r) for _, r in self.skipped).most_common())

    def skipped_message(self, shown: int = 3) -> str | None:
        """One warning line: counts by reason, then the first few files with theirs; None when nothing was skipped.

        E.g. ``skipped 3 file(s): 2 truncated, 1 not a regular file — b/t.jpg: truncated; b/u.jpg: truncated; …``
        """
        if not self.skipped:
            return None
        counts = ", ".join(f"{n} {reason}" for reason, n in self.skipped_by_reason().items())
        names = "; ".join(f"{one_line(self._rel(p), 80)}: {r}" for p, r in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"skipped {len(self.skipped)} file(s): {counts} — {names}{more}"

    def empty_classes_message(self, shown: int = 5) -> str | None:
        """One warning line naming the class folders left out for want of a usable image; None when there are none."""
        if not self.empty_classes:
            return None
        names = ", ".join(one_line(c, 40) for c in self.empty_classes[:shown])
        more = f" and {len(self.empty_classes) - shown} more" if len(self.empty_classes) > shown else ""
        return f"left out {len(self.empty_classes)} class folder(s) with no usable image: {names}{more}"

    def skip_report(self, limit: int = 1000) -> dict:
        """What the scan left out, ready for ``json.dumps``; ``files`` holds at most ``limit`` entries
        (``count`` says how many there were), paths relative to ``root`` when they lie inside it."""
        return {
            "count": len(self.skipped),
            "by_reason": self.skipped_by_reason(),
            "files": [{"path": self._rel(p), "reason": r} for p, r in self.skipped[:limit]],
            "empty_classes": list(self.empty_classes),
        }


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_folders(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The class sub-folders and every image-named file under them, with its class, in a stable order."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    candidates: list[tuple[Path, str]] = []
    for class_dir in class_dirs:
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            candidates.extend(
                (Path(dirpath) / n, class_dir.name) for n in sorted(filenames) if is_image_file(Path(dirpath) / n)
            )
    return class_dirs, candidates


def scan_folder(
    root: str | os.PathLike, progress: Callable[[int, int], None] | None = None, min_classes: int = 2
) -> ImageSet:
    """Read an ImageFolder tree ``root/<label>/<image>``.

    Hidden entries and non-image files are ignored; unusable images (truncated, too large, not a regular file,
    ...) are skipped and listed with the reason in ``ImageSet.skipped``. Classes are the sorted names of the
    sub-folders that hold at least one usable image; the others are listed in ``ImageSet.empty_classes``.

    Raises:
        EmbedderError: the folder is missing, holds no readable image, or fewer than ``min_classes`` classes
        (training needs two; images added to a gallery may all be of one).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EmbedderError(f"data folder not found: {root}")
    limit = max_pixels()
    class_dirs, candidates = _class_folders(root)
    if not candidates:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = " (images must sit in one sub-folder per label: root/<label>/<image>)" if loose else ""
        raise EmbedderError(f"no images found in {root}{hint}")

    paths, names, sizes, skipped = [], [], [], []
    for i, (path, label) in enumerate(candidates):
        try:
            sizes.append(check_image(path, limit))
            paths.append(path)
            names.append(label)
        except Exception as exc:  # PIL raises many types for broken files; all mean "skip it"
            skipped.append((path, skip_reason(exc)))
        if progress is not None:
            progress(i + 1, len(candidates))
    classes = sorted(set(names))
    found = ImageSet(
        root=root,
        paths=paths,
        labels=np.zeros(0, dtype=np.int64),
        classes=classes,
        sizes=sizes,
        skipped=skipped,
        empty_classes=[d.name for d in class_dirs if d.name not in set(names)],
    )
    if not paths:
        raise EmbedderError(f"no readable images in {root}: {found.skipped_message()}")
    if len(classes) < min_classes:
        empty = f"; {found.empty_classes_message()}" if found.empty_classes else ""
        raise EmbedderError(
            f"need at least {min_classes} classes (sub-folders with images) in {root}, found {len(classes)}{empty}"
        )
    index = {c: i for i, c in enumerate(classes)}
    found.labels = np.array([index[n] for n in names], dtype=np.int64)
    return found


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


def stratified_sample(labels: Sequence, cap: int, seed: int = 0) -> np.ndarray:
    """At most ``cap`` row indices (sorted) with every label keeping its share, and at least one row each.

    A plain random sample of a huge gallery would drop rare classes from the map entirely.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        take = max(1, int(round(len(rows) * cap / n)))
        keep.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    out = np.sort(np.concatenate(keep))
    if len(out) > cap:  # rounding up small classes can overshoot; trim at random, keeping one row per label
        extra = len(out) - cap
        firsts = {labels[i]: i for i in out[::-1]}
        droppable = np.setdiff1d(out, list(firsts.values()))
        out = np.setdiff1d(out, rng.choice(droppable, size=extra, replace=False))
    return out


def cap(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows`` (sorted), every label keeping its share: a seeded stratified sample."""
    if len(rows) <= limit:
        return rows
    return np.sort(rows[stratified_sample(labels[rows], limit, seed)])


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
    if target.exists():  # never written by us (we write it whole, atomically): not ours to replace
        raise EmbedderError(
            f"{target} exists but is not the demo set: move it away, or set EMBEDDER_CACHE to another folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=target.parent))
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = (255 - image * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 ink -> dark on white
        folder = tmp / str(label)
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.NEAREST).save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text(f"{len(digits.images)}\n")
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_data(data: str, write: bool = True) -> Path:
    """``"demo"`` -> the cached digits folder (written on first use unless ``write`` is False); anything else is
    taken as a path."""
    if data == "demo":
        return demo_dataset() if write else Path(default_cache_dir()) / "digits"
    return Path(data).expanduser().resolve()
