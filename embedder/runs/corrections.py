"""A run's corrections: which gallery images carry another label now, and which were taken out of the gallery,
kept in the run as an overlay (``corrections.json``) that every reader sees at once and that can be undone.

gallery.npz keeps the labels the gallery was trained or grown with; ``Run.load`` applies the overlay on top
(``apply``), so votes, maps, insights and metrics use the corrected labels without re-embedding anything, and
``Run.save`` writes the stored labels back (``stored_labels``). An image taken out leaves the gallery and its
index for real (every row number after it shifts), and its embedding is kept here, so undo puts it back without
reading the image again. Every change is logged with who made it and when, in batches an undo can take back.

The file is read like the bundle's others: bounded in size, validated against its schema, checked against the
SHA-256 that config.json records for it. A label is a class name as a folder would carry it (an ImageFolder export
and a retraining make folders of them).
"""

from __future__ import annotations

import base64
import functools
import getpass
import json
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from ..images.labels import label_problem
from .folders import sha256

FILE = "corrections.json"
SCHEMA = 1
MAX_BYTES = 256 * 2**20  # a million corrections fit; a file past this is refused before it is parsed
MAX_LOG = 100_000  # events kept; the oldest go first (the overlay itself is never trimmed)
CSV_FIELDS = ("path", "label", "action", "was", "by", "at")  # the export: ``relabel`` reads it back


def who() -> str:
    """Who makes a change from this process: user@host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Change:
    """A gallery image whose label is ``label`` now; gallery.npz stores ``was``."""

    path: str  # as the gallery stores it: relative to the data root, or absolute
    label: str
    was: str
    by: str
    at: str


@dataclass
class Removal:
    """A gallery image taken out of the gallery: what puts it back as it was."""

    path: str
    label: str  # the label gallery.npz stored for it
    current: str  # the label it carried when taken out (``label`` unless it had been corrected)
    embedding: str  # base64 of its (D,) float32 little-endian embedding
    by: str
    at: str
    label_free: str | None = None  # base64 of its (F,) float16 little-endian label-free features, if the run kept any

    def vector(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.embedding), dtype="<f4").astype(np.float32)

    def label_free_vector(self) -> np.ndarray | None:
        return None if self.label_free is None else np.frombuffer(base64.b64decode(self.label_free), dtype="<f2")


@dataclass
class Event:
    """One line of the log: an image's label set (``label``), or the image taken out (``label`` None). An undo
    batch ends with a line of path "" whose ``label`` names the batch it took back."""

    batch: int  # the call that made it: an undo takes back a whole batch
    action: Literal["relabel", "remove", "restore", "add", "undo"]  # "add": joined the gallery from Review
    path: str
    label: str | None  # after the event: its label, or None when out of the gallery
    before: str | None  # before the event, the same way
    by: str
    at: str


@dataclass
class Corrections:
    """The overlay: at most one change or one removal per gallery path, and the log of how it came to be."""

    schema: int = SCHEMA
    changes: list[Change] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    log: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes or self.removed or self.log)

    def change_of(self) -> dict[str, Change]:
        return {c.path: c for c in self.changes}

    def removal_of(self) -> dict[str, Removal]:
        return {r.path: r for r in self.removed}

    def next_batch(self) -> int:
        return max((e.batch for e in self.log), default=0) + 1

    def rows(self) -> list[dict]:
        """The overlay as CSV rows (``CSV_FIELDS``) that ``relabel`` reads back: relabelled images, then those taken
        out of the gallery."""
        out = [dict(zip(CSV_FIELDS, (c.path, c.label, "relabel", c.was, c.by, c.at))) for c in self.changes]
        out += [dict(zip(CSV_FIELDS, (r.path, "", "remove", r.label, r.by, r.at))) for r in self.removed]
        return out

    def to_json(self) -> str:
        from dataclasses import asdict

        return json.dumps({**asdict(self), "log": [asdict(e) for e in self.log[-MAX_LOG:]]}, indent=1)


@functools.cache
def _adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(Corrections)


def _problem(c: Corrections) -> str | None:
    """What the schema cannot say: one entry per path, labels fit for folders, embeddings that decode."""
    paths = [x.path for x in c.changes] + [x.path for x in c.removed]
    if len(set(paths)) != len(paths):
        return "a gallery image is corrected twice"
    labels = [x.label for x in c.changes] + [x.was for x in c.changes] + [x.label for x in c.removed]
    bad = next((p for p in map(label_problem, labels) if p), None)
    if bad:
        return bad
    for r in c.removed:
        try:
            raw = base64.b64decode(r.embedding, validate=True)
        except ValueError:
            return f"the embedding kept for {r.path!r} is not base64"
        if not raw or len(raw) % 4 or not np.isfinite(np.frombuffer(raw, dtype="<f4")).all():
            return f"the embedding kept for {r.path!r} is not a finite float32 vector"
        if r.label_free is not None and not _finite_half(r.label_free):
            return f"the label-free features kept for {r.path!r} are not a finite float16 vector"
    return None


def _finite_half(text: str) -> bool:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return bool(raw) and len(raw) % 2 == 0 and bool(np.isfinite(np.frombuffer(raw, dtype="<f2")).all())


def read(run_dir: Path, checksums: dict[str, str]) -> Corrections:
    """The run's overlay, checked (size, schema, the checksum recorded for it); empty when it has none.

    Raises:
        EmbedderError: the file is missing while config.json records it, too large, damaged or not this run's.
    """
    from pydantic import ValidationError

    from .bundle_read import damaged

    path, want = Path(run_dir) / FILE, checksums.get(FILE)
    if not path.exists():
        if want is not None:
            raise damaged(run_dir, f"missing {FILE}")
        return Corrections()
    if want is None:
        raise damaged(run_dir, f"no checksum recorded for {FILE}")
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        raise damaged(run_dir, f"{FILE} is not a file of at most {MAX_BYTES // 2**20} MB")
    if sha256(path) != want:
        raise damaged(run_dir, f"{FILE} does not match the checksum recorded when the run was written")
    text = path.read_bytes()
    try:
        found = _adapter().validate_json(text, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise damaged(run_dir, f"{FILE} field {where}: {error['msg']}") from None
    problem = f"schema {found.schema} is newer than this embedder's {SCHEMA}" if found.schema > SCHEMA else None
    problem = problem or _problem(found)
    if problem:
        raise damaged(run_dir, f"{FILE}: {problem}")
    return found


def apply(run) -> None:
    """The overlay onto a loaded run: corrected labels into ``run.gallery_labels`` (a label new to the run becomes a
    class at the end of ``run.classes``). A change whose image is no longer in the gallery is left as it is."""
    row_of = {p: i for i, p in enumerate(run.gallery_paths)}
    labels = run.gallery_labels.copy()
    for c in run.corrections.changes:
        row = row_of.get(c.path)
        if row is not None:
            labels[row] = class_index(run, c.label)
    run.gallery_labels = labels


def class_index(run, label: str) -> int:
    """``label``'s index in ``run.classes``, appended as a new class when the run has none by that name."""
    try:
        return run.classes.index(label)
    except ValueError:
        run.classes = [*run.classes, label]
        return len(run.classes) - 1


def compact(run) -> None:
    """Drop the classes nothing names any more: no gallery image (as stored or corrected), no correction and no
    recorded held-out image carries them (a label a correction brought in, then taken back). Before a run is
    written, so its class list does not keep labels of nothing."""
    named = {run.classes[i] for i in np.unique(run.gallery_labels)}
    named |= {c.label for c in run.corrections.changes} | {c.was for c in run.corrections.changes}
    named |= {r.label for r in run.corrections.removed} | {r.current for r in run.corrections.removed}
    named |= {row[1] for part, rows in run.split.items() if isinstance(rows, list) for row in rows}
    keep = [c for c in run.classes if c in named]
    if len(keep) < len(run.classes):
        index = {c: i for i, c in enumerate(keep)}
        run.gallery_labels = np.array([index[run.classes[i]] for i in run.gallery_labels], dtype=np.int64)
        run.classes = keep


def stored_labels(run) -> np.ndarray:
    """(N,) the labels gallery.npz keeps: the gallery's labels with every correction taken back."""
    row_of = {p: i for i, p in enumerate(run.gallery_paths)}
    labels = run.gallery_labels.copy()
    for c in run.corrections.changes:
        row = row_of.get(c.path)
        if row is not None:
            labels[row] = class_index(run, c.was)
    return labels
