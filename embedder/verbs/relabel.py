"""Correcting a run's gallery without retraining: set an image's label, take it out of the gallery, or take either
back, as the run's corrections overlay (runs/corrections.py) records them.

    read the label rows -> find each image in the gallery -> set its state -> (rows out or back: index) ->
    score the held-out queries again -> write

A label change touches only corrections.json (and metrics.json): the gallery, its index and its cached maps stay,
and the next reader sees the new labels at once. Taking images out, or putting them back, rewrites the gallery
and its index as ``add`` does. Held-out P@1 and the other retrieval metrics are measured again on the corrected
gallery with the queries' embeddings kept in the run's cache (the network did not change, so nothing is embedded
twice); the baselines stay as measured at training, and the metrics say so. The image files are never touched.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..answers.rescore import rescore
from ..errors import EmbedderError, one_line
from ..images.label_file import LabelRow, key
from ..progress import Progress, Reporter, Stage, silent
from ..runs import bundle
from ..runs.corrections import FILE, Change, Event, Removal, class_index, now, who
from ..runs.lock import training_under_way, writing
from ..runs.records import Evaluation
from ..runs.run import Run, load_run
from ..training.checkpoint import work_dir
from .finish import index_gallery

OUT = None  # a target state: out of the gallery


@dataclass
class Relabelled:
    """What ``relabel`` or ``undo_last`` did, for the CLI and the app to report."""

    run_dir: Path
    batch: int  # the log's batch of this call (0: nothing changed)
    changed: int = 0  # images given another label
    removed: int = 0  # images taken out of the gallery
    restored: int = 0  # images put back
    unchanged: int = 0  # rows that asked for what already was
    not_found: list[str] = field(default_factory=list)  # rows naming no image of the gallery
    new_classes: list[str] = field(default_factory=list)
    p_at_1: tuple[float | None, float | None] = (None, None)  # held-out P@1 before and after

    def summary(self) -> str:
        """One line, e.g. ``relabelled 28 images, took 2 out of the gallery; held-out P@1 0.950 -> 0.983``."""
        done = [
            f"relabelled {self.changed} image(s)" if self.changed else "",
            f"took {self.removed} out of the gallery" if self.removed else "",
            f"put {self.restored} back" if self.restored else "",
            f"new classes: {', '.join(self.new_classes)}" if self.new_classes else "",
            f"{self.unchanged} already as asked" if self.unchanged else "",
            f"{len(self.not_found)} not in the gallery (e.g. {one_line(self.not_found[0], 80)})"
            if self.not_found
            else "",
        ]
        line = "; ".join(filter(None, done)) or "nothing to change"
        before, after = self.p_at_1
        if before is not None and after is not None and self.batch:
            line += f"; held-out P@1 {before:.3f} -> {after:.3f}"
        return line


class _State:
    """The gallery paths, their labels and the overlay, as one call changes them: rows keep their numbers until
    ``finish`` takes the removed ones out and appends the restored ones."""

    def __init__(self, run: Run, batch: int, by: str) -> None:
        self.run, self.batch, self.by, self.when = run, batch, by, now()
        self.row_of = {key(p, run.data_root): i for i, p in enumerate(run.gallery_paths)}
        self.changes = run.corrections.change_of()
        self.removals = run.corrections.removal_of()
        self.removal_at = {key(p, run.data_root): p for p in self.removals}
        self.out_rows: set[int] = set()
        self.back: list[Removal] = []
        self.events: list[Event] = []
        self.classes_before = list(run.classes)

    def find(self, path: str) -> tuple[str, int | None] | None:
        """(the gallery's spelling of ``path``, its row or None when it is out of the gallery), or None."""
        k = key(path, self.run.data_root)
        row = self.row_of.get(k)
        if row is not None and row not in self.out_rows:
            return self.run.gallery_paths[row], row
        if k in self.removal_at:
            return self.removal_at[k], None
        return None

    def label_of(self, row: int | None) -> str | None:
        """The image's label now; None while it is out of the gallery."""
        return None if row is None else self.run.classes[self.run.gallery_labels[row]]

    def stored_label(self, stored: str, row: int | None) -> str:
        """What gallery.npz keeps for the image."""
        if row is None:
            return self.removals[stored].label
        change = self.changes.get(stored)
        return change.was if change else self.run.classes[self.run.gallery_labels[row]]

    def set(self, stored: str, row: int | None, target: str | None, action: str) -> str:
        """Give the image ``target`` (a label, or OUT); returns "changed", "removed", "restored" or "unchanged"."""
        before = self.label_of(row)
        if before == target:
            return "unchanged"
        was = self.stored_label(stored, row)
        self.events.append(Event(self.batch, action, stored, target, before, self.by, self.when))
        if target is OUT:
            embedding = base64.b64encode(self.run.gallery_embeddings[row].astype("<f4").tobytes()).decode()
            free = self.run.label_free
            free = None if free is None else base64.b64encode(free[row].astype("<f2").tobytes()).decode()
            self.removals[stored] = Removal(stored, was, before, embedding, self.by, self.when, free)
            self.changes.pop(stored, None)
            self.out_rows.add(row)
            return "removed"
        self._label(stored, target, was)
        if row is None:
            self.back.append(self.removals.pop(stored))
            return "restored"
        self.run.gallery_labels[row] = class_index(self.run, target)
        return "changed"

    def _label(self, stored: str, target: str, was: str) -> None:
        if target == was:
            self.changes.pop(stored, None)
        else:
            self.changes[stored] = Change(stored, target, was, self.by, self.when)

    def finish(self, report: Reporter) -> bool:
        """The overlay into the run, and rows out of or back into the gallery; True when the gallery's rows
        changed (then its index was rebuilt)."""
        run = self.run
        run.corrections.changes = list(self.changes.values())
        run.corrections.removed = list(self.removals.values())
        run.corrections.log = [*run.corrections.log, *self.events]
        if not self.out_rows and not self.back:
            return False
        keep = np.setdiff1d(np.arange(len(run.gallery_paths)), np.fromiter(self.out_rows, np.int64))
        _keep_rows(run, keep)
        if self.back:
            dim = run.gallery_embeddings.shape[1]
            vectors = [r.vector() for r in self.back]
            if any(len(v) != dim for v in vectors):
                raise EmbedderError("an image taken out earlier was embedded by another network: it cannot go back")
            run.gallery_paths = [*run.gallery_paths, *(r.path for r in self.back)]
            labels = [
                class_index(run, self.changes[r.path].label if r.path in self.changes else r.label) for r in self.back
            ]
            run.gallery_labels = np.concatenate([run.gallery_labels, np.array(labels, dtype=np.int64)])
            run.gallery_embeddings = np.concatenate([run.gallery_embeddings, np.stack(vectors)]).astype(np.float32)
            run.label_free = _label_free_back(run.label_free, self.back)
        if not len(run.gallery_paths):
            raise EmbedderError("that would take every image out of the gallery: keep at least one")
        run._index = index_gallery(run.gallery_embeddings, run.train_config, report)
        return True


def _label_free_back(free: np.ndarray | None, back: list) -> np.ndarray | None:
    """The run's label-free features with the rows of the images put ``back`` appended; None (the labels are then
    judged in the network's space) when one of them was taken out without any kept."""
    vectors = [r.label_free_vector() for r in back]
    if free is None or any(v is None or len(v) != free.shape[1] for v in vectors):
        return None
    return np.concatenate([free, np.stack(vectors)]).astype(np.float16)


def _keep_rows(run: Run, keep: np.ndarray) -> None:
    """Only the gallery rows ``keep`` (sorted): their label-free features, and the novelty reference's rows among
    them renumbered."""
    run.gallery_paths = [run.gallery_paths[i] for i in keep]
    run.gallery_labels = run.gallery_labels[keep]
    run.gallery_embeddings = run.gallery_embeddings[keep]
    if run.label_free is not None:
        run.label_free = run.label_free[keep]
    if run.novelty_rows is not None:
        new_row = np.full(max(int(keep.max(initial=-1)), int(run.novelty_rows.max(initial=-1))) + 1, -1)
        new_row[keep] = np.arange(len(keep))
        stays = new_row[run.novelty_rows] >= 0
        if stays.any():
            run.novelty_rows, run.novelty_reference = new_row[run.novelty_rows[stays]], run.novelty_reference[stays]
        else:
            run.novelty_rows = run.novelty_reference = None


def relabel(
    run_dir: str | os.PathLike,
    rows: list[LabelRow],
    undo: bool = False,
    by: str | None = None,
    progress: Reporter | None = None,
) -> Relabelled:
    """Apply label rows to the gallery of the run at ``run_dir``: each image gets its row's label, or with no label
    leaves the gallery; with ``undo``, each listed image gets back the label gallery.npz keeps and, if it was taken
    out, its place in the gallery. Held under the run's lock; the run is rewritten atomically.

    Raises:
        EmbedderError: not a run, a training still writing it, no row naming an image of the gallery, or another
        writer holding the run too long.
    """
    report = progress or silent
    with writing(run_dir, report):
        run = load_run(run_dir)
        _check_run(run)
        state = _State(run, run.corrections.next_batch(), by or who())
        done = Relabelled(run.path, state.batch)
        for row in rows:
            found = state.find(row.path)
            if found is None:
                done.not_found.append(row.path)
                continue
            stored, at = found
            target = state.stored_label(stored, at) if undo else row.label
            action = "restore" if at is None else "remove" if target is OUT else "relabel"
            what = state.set(stored, at, target, action)
            setattr(done, what, getattr(done, what) + 1)
        if rows and len(done.not_found) == len(rows):
            raise EmbedderError(
                f"none of the {len(rows)} rows names an image of {run.name}'s gallery (e.g. "
                f"{one_line(rows[0].path, 120)}): paths are absolute, or relative to {run.data_root}"
            )
        return _finish(run, state, done, report)


def undo_last(run_dir: str | os.PathLike, by: str | None = None, progress: Reporter | None = None) -> Relabelled:
    """Take back the latest batch of corrections that was not taken back yet (the app's Undo): every image it
    touched gets the state it had before.

    Raises:
        EmbedderError: not a run, nothing to undo, or what ``relabel`` refuses.
    """
    report = progress or silent
    with writing(run_dir, report):
        run = load_run(run_dir)
        _check_run(run)
        undone = {e.label for e in run.corrections.log if e.action == "undo" and e.path == ""}
        batches = [e.batch for e in run.corrections.log if e.action != "undo" and str(e.batch) not in undone]
        if not batches:
            raise EmbedderError(f"nothing to undo in {run.name}")
        last = max(batches)
        state = _State(run, run.corrections.next_batch(), by or who())
        done = Relabelled(run.path, state.batch)
        for event in reversed([e for e in run.corrections.log if e.batch == last]):
            found = state.find(event.path)
            if found is not None:
                what = state.set(*found, event.before, "undo")
                setattr(done, what, getattr(done, what) + 1)
        # A marker line: this batch undid batch ``last`` (so the next undo takes back the one before).
        state.events.append(Event(state.batch, "undo", "", str(last), None, state.by, state.when))
        return _finish(run, state, done, report)


def _check_run(run: Run) -> None:
    if training_under_way(run.path):
        raise EmbedderError(
            f"a training of {run.name} is under way: the run it writes at its end would not hold these corrections; "
            "make them when it is done"
        )
    if work_dir(run.path).exists():
        raise EmbedderError(
            f"a training of {run.name} is under way or was interrupted (its checkpoints are in {work_dir(run.path)}): "
            "let it finish, or resume it, before correcting its gallery"
        )


def _finish(run: Run, state: _State, done: Relabelled, report: Reporter) -> Relabelled:
    """The overlay and any rows out or back into the run, the metrics scored again, the run written."""
    if not state.events:
        done.batch = 0
        return done
    rows_changed = state.finish(report)
    done.new_classes = [c for c in run.classes if c not in state.classes_before]
    before = (run.record.test or Evaluation()).precision_at_1
    rescore(run, report)
    done.p_at_1 = (before, (run.record.test or Evaluation()).precision_at_1)
    report(Progress(Stage.WRITE, message=f"writing {run.path}"))
    if rows_changed:
        run.save()
    else:
        import json

        texts = {FILE: run.corrections.to_json(), "metrics.json": json.dumps(run.metrics, indent=1)}
        bundle.update(run.path, texts)
    report(Progress(Stage.DONE, message=str(run.path)))
    return done
