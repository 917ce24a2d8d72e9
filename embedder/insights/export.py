"""A run's embeddings out of this program: the TensorBoard Embedding Projector's files, a CSV of gallery rows
(id, path, label, map coordinates, nearest neighbours), and the run bundle as a .zip.

An export folder is written whole into a temporary sibling and swapped into place, carrying the marker
``.embedder-export``; an existing folder is only replaced when it is empty or one of our exports (the rule
``bundle.check_out`` applies to runs), and never inside the run or its images.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EmbedderError
from ..images.data import is_inside, load_image, stratified_sample
from ..runs.bundle import BUNDLE_FILES
from ..runs.folders import foreign_entries, swap_into_place

MARKER = ".embedder-export"
PROJECTOR_FILES = frozenset({MARKER, "tensors.tsv", "metadata.tsv", "sprite.png", "projector_config.pbtxt"})
CSV_FILES = frozenset({MARKER, "gallery.csv"})
SPRITE_THUMB = 32  # pixels per sprite cell
SPRITE_MAX_SIDE = 8192  # TensorBoard's limit on a sprite's side: at most (8192 / 32)^2 = 65,536 images
CSV_NEIGHBOURS = 5
Progress = Callable[[int, int], None]


@dataclass
class Exported:
    out: Path
    n_exported: int
    n_gallery: int
    note: str | None = None  # said when only a sample was exported


def _clean(text: str) -> str:
    """A TSV cell: tabs and line breaks would shift columns and rows."""
    return " ".join(str(text).split())


def check_export_out(out: Path, run, ours: frozenset[str]) -> None:
    """Refuse ``out`` when replacing it could destroy what this program did not write.

    Raises:
        EmbedderError: one line naming the folder and what to do instead.
    """
    for folder, what in ((run.path, "run folder"), (run.data_root, "image folder")):
        if is_inside(out, folder) or is_inside(folder, out):
            raise EmbedderError(f"--out {out} overlaps the {what} {folder}: choose an --out outside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise EmbedderError(f"--out {out} is a file, not a folder: choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or ((out / MARKER).is_file() and not foreign_entries(out, ours)):
        return
    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    raise EmbedderError(f"--out {out} exists and is not an export folder (it holds {shown}): choose a new --out")


def write_folder(out: str | os.PathLike, run, ours: frozenset[str], fill: Callable[[Path], None]) -> Path:
    """``fill(tmp)`` writes the export's files into a temporary sibling of ``out``, which then replaces ``out``."""
    out = Path(out).expanduser().resolve()
    check_export_out(out, run, ours)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        (tmp / MARKER).write_text("embedder export\n")
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _cell(path: Path, side: int) -> Image.Image:
    """One sprite cell: the image fitted into ``side`` x ``side`` on white; grey when it cannot be read."""
    cell = Image.new("RGB", (side, side), (255, 255, 255))
    try:
        img = load_image(path, max_side=side)
    except EmbedderError:
        return Image.new("RGB", (side, side), (128, 128, 128))
    img.thumbnail((side, side))
    cell.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return cell


def sprite(paths: list[Path], side: int = SPRITE_THUMB, progress: Progress | None = None) -> Image.Image:
    """The images tiled row by row into a square grid of ``side`` pixel cells (the projector's sprite)."""
    cols = max(1, math.ceil(math.sqrt(len(paths))))
    sheet = Image.new("RGB", (cols * side, cols * side), (255, 255, 255))
    for i, path in enumerate(paths):
        sheet.paste(_cell(path, side), ((i % cols) * side, (i // cols) * side))
        if progress is not None and ((i + 1) % 256 == 0 or i + 1 == len(paths)):
            progress(i + 1, len(paths))
    return sheet


PBTXT = """embeddings {{
  tensor_path: "tensors.tsv"
  metadata_path: "metadata.tsv"
  sprite {{
    image_path: "sprite.png"
    single_image_dim: {side}
    single_image_dim: {side}
  }}
}}
"""


def projector(
    run,
    out: str | os.PathLike,
    side: int = SPRITE_THUMB,
    max_side: int = SPRITE_MAX_SIDE,
    progress: Progress | None = None,
) -> Exported:
    """The Embedding Projector's files for ``run``'s gallery into the folder ``out``: tensors.tsv (one embedding
    per line), metadata.tsv (path and label, with a header), sprite.png and projector_config.pbtxt. A gallery too
    large for one sprite is exported as a stratified sample (every label in its share), and ``note`` says so."""
    n = len(run.gallery_paths)
    cap = (max_side // side) ** 2
    rows = stratified_sample(run.gallery_labels, cap)  # all rows when they fit
    note = None if len(rows) == n else f"exported {len(rows):,} of {n:,} gallery images (a sprite holds {cap:,})"

    def fill(tmp: Path) -> None:
        with open(tmp / "tensors.tsv", "w") as f:
            for start in range(0, len(rows), 4096):
                np.savetxt(f, run.gallery_embeddings[rows[start : start + 4096]], delimiter="\t", fmt="%.6g")
        with open(tmp / "metadata.tsv", "w") as f:
            f.write("path\tlabel\n")
            f.writelines(
                f"{_clean(run.gallery_paths[r])}\t{_clean(run.classes[run.gallery_labels[r]])}\n" for r in rows
            )
        files = run.gallery_files()
        sprite([files[r] for r in rows], side, progress).save(tmp / "sprite.png")
        (tmp / "projector_config.pbtxt").write_text(PBTXT.format(side=side))

    return Exported(write_folder(out, run, PROJECTOR_FILES, fill), len(rows), n, note)


def selection_rows(run, rows: Iterable[int], coords: np.ndarray, k: int = CSV_NEIGHBOURS) -> list[dict]:
    """Gallery ``rows`` as CSV records: id (the gallery row), path (relative to the data root), label, the map
    coordinates ``coords`` (len(rows), d), and the ids of the ``k`` nearest other gallery images."""
    from ..search.knn import topk

    rows = np.asarray(list(rows), dtype=np.int64)
    idx, _ = topk(run.gallery_embeddings[rows], run.gallery_embeddings, k, exclude=rows)  # (R, k)
    axes = "xyz"[: coords.shape[1]] if coords.ndim == 2 else ""
    return [
        {
            "id": int(r),
            "path": run.gallery_paths[r],
            "label": run.classes[run.gallery_labels[r]],
            **{a: f"{v:.5f}" for a, v in zip(axes, xy)},
            "neighbours": " ".join(str(int(j)) for j in nn),
        }
        for r, xy, nn in zip(rows, coords, idx)
    ]


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    if records:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return buf.getvalue()


def gallery_csv(run, out: str | os.PathLike, k: int = CSV_NEIGHBOURS, chunk: int = 8192) -> Exported:
    """Every gallery image as a row of ``out``/gallery.csv, with 2-D PCA coordinates and its nearest neighbours;
    written a chunk of rows at a time."""
    from ..maps.project import project

    coords = project(run.gallery_embeddings, "pca", 2, 0).coords
    n = len(run.gallery_paths)

    def fill(tmp: Path) -> None:
        with open(tmp / "gallery.csv", "w", newline="") as f:
            for start in range(0, n, chunk):
                rows = np.arange(start, min(n, start + chunk))
                text = to_csv(selection_rows(run, rows, coords[rows], k))
                f.write(text if start == 0 else text.split("\n", 1)[1])

    return Exported(write_folder(out, run, CSV_FILES, fill), n, n)


def bundle_zip(run_path: str | os.PathLike, handle) -> list[str]:
    """The run bundle's own files (nothing else that sits in its folder) as a .zip written to ``handle``, under
    a folder named after the run. Returns the names written."""
    run_path = Path(run_path)
    names = sorted(p.name for p in run_path.iterdir() if p.is_file() and p.name in BUNDLE_FILES)
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(run_path / name, f"{run_path.name}/{name}")
    return names
