"""A label file: a CSV of ``path,label`` rows (an optional ``action`` column says ``remove`` for an image to leave
out) that corrects the labels an image folder's sub-folders give. ``relabel`` applies one to a run's gallery;
``train --labels`` to the images it trains on, so a retraining learns from the fixed labels.

A path is absolute, or relative to the data folder, as ``mislabels --json`` and ``export`` print it. Extra columns
are ignored, so a run's exported corrections (``path,label,action,was,by,at``) read back as they are. A ``.json``
file is read too: a list of objects with ``path`` and ``label``, or the output of ``mislabels --json``, whose
``suggested`` label is the correction.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import EmbedderError, one_line
from .data import ImageSet

MAX_BYTES = 512 * 2**20  # a label file past this is refused before it is read
ACTIONS = ("relabel", "remove")


@dataclass(frozen=True)
class LabelRow:
    path: str
    label: str | None  # None: leave the image out (action "remove")


def key(path: str | os.PathLike, root: Path) -> str:
    """How two spellings of one file compare: absolute (``root`` before a relative path), normalised, with no
    system call per file (100,000 of them)."""
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else Path(root) / p)


def _json_records(text: str, where: str) -> list[dict]:
    """A JSON list of objects, each with a path and a label (or ``suggested``, as ``mislabels --json`` prints)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EmbedderError(f"{where} is not valid JSON ({one_line(str(exc), 80)})") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise EmbedderError(f"{where} must hold a JSON list of objects with path and label")
    return [{**v, "label": v.get("suggested", v.get("label"))} for v in value]


def parse(text: str, where: str = "the label file", as_json: bool = False) -> list[LabelRow]:
    """CSV (or JSON) text -> rows. A CSV header with ``path`` and ``label`` is required; ``action`` is optional.

    Raises:
        EmbedderError: no such header, an unknown action, an empty label that is not a removal, a path twice.
    """
    from .labels import check_label

    if as_json:
        records, first = _json_records(text, where), 1
    else:
        reader = csv.DictReader(io.StringIO(text))
        columns = set(reader.fieldnames or [])
        if not {"path", "label"} <= columns:
            found = one_line(", ".join(sorted(columns)), 80)
            raise EmbedderError(f"{where} needs a header with the columns path and label (found: {found})")
        records, first = reader, 2
    rows, seen, unit = [], set(), "item" if as_json else "line"
    for n, row in enumerate(records, start=first):
        path, label = str(row.get("path") or "").strip(), str(row.get("label") or "").strip()
        action = str(row.get("action") or "").strip() or "relabel"
        if not path:
            raise EmbedderError(f"{where} {unit} {n}: no path")
        if action not in ACTIONS:
            raise EmbedderError(f"{where} {unit} {n}: unknown action {one_line(action, 40)!r} (relabel or remove)")
        if path in seen:
            raise EmbedderError(f"{where} {unit} {n}: {one_line(path, 120)} is listed twice")
        seen.add(path)
        try:
            rows.append(LabelRow(path, None if action == "remove" else check_label(label)))
        except EmbedderError as exc:
            raise EmbedderError(f"{where} {unit} {n}: {exc}") from None
    return rows


def read(path: str | os.PathLike) -> list[LabelRow]:
    """The rows of the label file at ``path`` (``parse``), its size bounded.

    Raises:
        EmbedderError: missing, too large, not UTF-8 text, or what ``parse`` refuses.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise EmbedderError(f"label file not found: {p}")
    if p.stat().st_size > MAX_BYTES:
        raise EmbedderError(f"label file {p} is larger than {MAX_BYTES // 2**20} MB")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise EmbedderError(f"label file {p} is not UTF-8 text") from None
    return parse(text, f"label file {p.name}", as_json=p.suffix.lower() == ".json")


def relabelled(images: ImageSet, rows: list[LabelRow]) -> tuple[ImageSet, str | None]:
    """``images`` with the label file's labels (a label the folders lack becomes a class; classes stay sorted) and
    its removals left out, and one line saying what changed (None when nothing did). Rows naming no image of the
    folder are counted in that line, not refused: a label file may cover more than one folder."""
    at = {key(p, images.root): i for i, p in enumerate(images.paths)}
    names = [images.classes[c] for c in images.labels]
    keep = np.ones(len(images), dtype=bool)
    changed = removed = missing = 0
    for row in rows:
        i = at.get(key(row.path, images.root))
        if i is None:
            missing += 1
        elif row.label is None:
            removed += int(keep[i])
            keep[i] = False
        elif names[i] != row.label:
            names[i], changed = row.label, changed + 1
    if not (changed or removed or missing):
        return images, None
    classes = sorted({n for n, k in zip(names, keep) if k})
    index = {c: i for i, c in enumerate(classes)}
    rows_kept = np.flatnonzero(keep)
    out = replace(
        images,
        paths=[images.paths[i] for i in rows_kept],
        labels=np.array([index[names[i]] for i in rows_kept], dtype=np.int64),
        classes=classes,
        sizes=[images.sizes[i] for i in rows_kept] if images.sizes else [],
    )
    note = f"labels from the label file: {changed} changed, {removed} left out"
    return out, note + (f"; {missing} of its rows name no image of {images.root.name}" if missing else "")
