"""Labelling a folder of new images with a run: every image under it (recursive; no class folders needed), a batch
at a time, each batch's answers appended to the output as soon as they exist, so a stop keeps what is done and
``resume`` carries on where it stopped.

    list the images -> leave out those answered already -> per batch: embed, vote, append -> count

Memory stays bounded whatever the folder holds: a batch's images are decoded a few dozen at a time (the run's
embedding batch), and its neighbours come from the run's index, k per image (never a queries x gallery matrix).
An image that cannot be read gets a row with the reason, and no label.

Each row: the label, its calibrated confidence and vote share, whether it is "unknown" (far from the gallery, or
unlike every gallery image: ``novel``) with its closest label kept in ``closest``, and the nearest neighbours. A run
whose "unknown" threshold would swallow nearly every answer (``answers.trust``) calls nothing "unknown" for being
far: every answer keeps its label and its confidence ranks it, and the result says so once.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..answers.predict import UNKNOWN, Prediction, Predictor
from ..answers.trust import LEVEL, expected_wrong, promise, unknown_swallows
from ..errors import Cancelled, EmbedderError, one_line
from ..images.data import is_image_file, is_inside
from ..progress import Progress, Reporter, Stage, silent
from ..runs.run import Run

COLUMNS = (
    "path",  # relative to the labelled folder
    "label",  # the answer: a class, "unknown", or empty for an image that could not be read
    "confidence",  # the calibrated probability that ``closest`` is right
    "vote_share",
    "unknown",  # the answer is "unknown": far from every gallery image, or unlike all of them (novel)
    "novel",
    "closest",  # the label the neighbours vote for, also when the answer is "unknown"
    "nearest_distance",
    "neighbours",  # label:distance:gallery path | ..., nearest first
    "error",  # why the image could not be read
)
BATCH = 256  # images answered, and appended to the output, at a time


@dataclass
class LabelOptions:
    resume: bool = False  # carry on an output written before (its rows are kept; their images are not answered again)
    as_json: bool = False  # JSON Lines (one object per line) instead of CSV
    k: int | None = None  # neighbours that vote (default: the run's)
    unknown: bool = True  # answer "unknown" far from the gallery (unless the run's threshold would swallow all)
    device: str = "cpu"
    batch: int = BATCH


@dataclass
class Labelled:
    """What ``label_folder`` did, and the calibration's promise said before it."""

    out: Path
    root: Path
    total: int  # images under the folder
    answered: int = 0  # answered in this call
    resumed: int = 0  # answered before (resume)
    unreadable: int = 0
    unknown: int = 0
    sure: int = 0  # answers at confidence >= LEVEL
    expected_wrong_sure: float = 0.0  # how many of those the calibration expects wrong
    notes: list[str] = field(default_factory=list)  # the promise, and "unknown" switched off when it swallows

    def summary(self) -> str:
        return (
            f"labelled {self.answered:,} images"
            + (f" ({self.resumed:,} more were labelled before)" if self.resumed else "")
            + f"; {self.sure:,} at confidence >= {LEVEL:.2f} (about {self.expected_wrong_sure:.1f} of them wrong)"
            + (f"; {self.unknown:,} unknown" if self.unknown else "")
            + (f"; {self.unreadable:,} unreadable" if self.unreadable else "")
        )


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder``, hidden entries left out, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / n for n in sorted(filenames) if is_image_file(Path(dirpath) / n))
    return found


def _row(pred: Prediction, rel: str, gallery_paths: list[str]) -> dict:
    closest = next(iter(pred.votes), pred.label)
    return {
        "path": rel,
        "label": pred.label,
        "confidence": round(pred.confidence, 4),
        "vote_share": round(pred.vote_share, 4),
        "unknown": pred.label == UNKNOWN,
        "novel": pred.novel,
        "closest": closest,
        "nearest_distance": round(pred.nearest_distance, 4),
        "neighbours": " | ".join(f"{n.label}:{n.distance:.4f}:{gallery_paths[n.index]}" for n in pred.neighbours),
        "error": "",
    }


def _error_row(rel: str, reason: str) -> dict:
    return {c: "" for c in COLUMNS} | {"path": rel, "unknown": False, "novel": False, "error": reason}


class _Output:
    """The output file: its rows so far (on resume), and rows appended a batch at a time, flushed to disk."""

    def __init__(self, out: Path, options: LabelOptions) -> None:
        self.out, self.as_json = out, options.as_json
        self.done: set[str] = set()
        if out.exists() and not options.resume:
            raise EmbedderError(f"{out} exists: pass --resume to carry it on, or choose another --out")
        if out.exists():
            self.done = self._read_back()
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh = not out.exists() or out.stat().st_size == 0
        self.handle = open(out, "a", newline="", encoding="utf-8")  # noqa: SIM115  (open for the whole labelling)
        if fresh and not self.as_json:
            self.handle.write(",".join(COLUMNS) + "\r\n")

    def _read_back(self) -> set[str]:
        """The paths answered in an earlier call; a last line cut off by the stop is dropped."""
        data = self.out.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with open(self.out, "r+b") as f:
                f.truncate(len(data))
        text = data.decode("utf-8")
        if self.as_json:
            try:
                return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}
            except (ValueError, KeyError, TypeError):
                raise EmbedderError(f"{self.out} is not a JSON Lines file this command wrote") from None
        reader = csv.DictReader(io.StringIO(text))
        if text and tuple(reader.fieldnames or ()) != COLUMNS:
            raise EmbedderError(f"{self.out} is not a labels CSV this command wrote (its header differs)")
        return {r["path"] for r in reader}

    def append(self, rows: list[dict]) -> None:
        if self.as_json:
            self.handle.write("".join(json.dumps(r) + "\n" for r in rows))
        else:
            buf = io.StringIO()
            csv.DictWriter(buf, COLUMNS).writerows(rows)
            self.handle.write(buf.getvalue())
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _answers(predictor: Predictor, paths: list[Path], k: int | None, unknown: bool) -> Iterator[Prediction | str]:
    """Each image's Prediction, or the reason it could not be read. A batch is embedded as one; when an image in
    it cannot be decoded, its images are embedded one at a time to tell which."""
    try:
        emb, features = predictor.embed_with_features([str(p) for p in paths])
        yield from predictor.predict_embeddings(emb, [str(p) for p in paths], k, unknown, features)
        return
    except EmbedderError:
        if len(paths) == 1:
            raise
    for p in paths:
        try:
            yield from _answers(predictor, [p], k, unknown)
        except EmbedderError as exc:
            yield getattr(exc, "reason", None) or one_line(str(exc), 120)


def label_folder(
    run: Run,
    folder: str | os.PathLike,
    out: str | os.PathLike,
    options: LabelOptions | None = None,
    progress: Reporter | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Labelled:
    """Label every image under ``folder`` with ``run`` into ``out`` (CSV, or JSON Lines), a batch at a time.

    ``should_stop()`` is asked between batches (True raises ``Cancelled``; what is written stays). The promise of
    the run's calibration, and whether its "unknown" is switched off, are reported first and kept in ``notes``.

    Raises:
        EmbedderError: the folder missing or without images, the output inside it, an output that exists without
        ``resume`` (or was not written by this command), ``k`` below 1.
    """
    options, report, stop = options or LabelOptions(), progress or silent, should_stop or (lambda: False)
    root, out = Path(folder).expanduser().resolve(), Path(out).expanduser().resolve()
    if not root.is_dir():
        raise EmbedderError(f"folder not found: {root}")
    if options.k is not None and options.k < 1:
        raise EmbedderError("--k must be at least 1")
    if is_inside(out, root):
        raise EmbedderError(f"--out {out} lies inside the folder being labelled: write it elsewhere")
    files = image_files(root)
    if not files:
        raise EmbedderError(f"no images found under {root}")
    output = _Output(out, options)
    done = Labelled(out, root, len(files), resumed=len(output.done))
    record = run.record
    done.notes.append(promise(record))
    swallows = unknown_swallows(record)
    if swallows and options.unknown:
        done.notes.append(swallows)
    for note in done.notes:
        report(Progress(Stage.NOTE, message=note))
    todo = [p for p in files if p.relative_to(root).as_posix() not in output.done]
    options = replace(options, unknown=options.unknown and swallows is None)
    try:
        _Batches(Predictor(run, options.device), options, output, done).run(todo, report, stop)
    finally:
        output.close()
    return done


@dataclass
class _Batches:
    """The loop: a batch answered, appended and counted at a time."""

    predictor: Predictor
    options: LabelOptions
    output: _Output
    done: Labelled

    def run(self, todo: list[Path], report: Reporter, stop: Callable[[], bool]) -> None:
        done, size = self.done, self.options.batch
        for start in range(0, len(todo), size):
            if stop():
                raise Cancelled(f"labelling stopped: {done.answered + done.resumed:,} images are in {done.out}")
            self.output.append(self.rows(todo[start : start + size]))
            report(Progress(Stage.EMBED, done=done.answered + done.resumed, total=done.total, message="labelling"))

    def rows(self, paths: list[Path]) -> list[dict]:
        """One batch's rows, counted into ``done``."""
        done, gallery_paths = self.done, self.predictor.run.gallery_paths
        rows, confidences = [], []
        for path, answer in zip(paths, _answers(self.predictor, paths, self.options.k, self.options.unknown)):
            rel = path.relative_to(done.root).as_posix()
            if isinstance(answer, str):
                rows.append(_error_row(rel, answer))
                done.unreadable += 1
                continue
            rows.append(_row(answer, rel, gallery_paths))
            done.unknown += answer.label == UNKNOWN
            if answer.label != UNKNOWN:
                confidences.append(answer.confidence)
        sure = np.array([c for c in confidences if c >= LEVEL])
        done.sure += len(sure)
        done.expected_wrong_sure += expected_wrong(sure)
        done.answered += len(paths)
        return rows
