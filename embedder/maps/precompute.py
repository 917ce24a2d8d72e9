"""Every map the Explore page offers, computed once after a run is written (and after ``add``) and stored in the
run, so that it opens in milliseconds instead of a minute behind a spinner: PCA, t-SNE and UMAP in 2-D and 3-D of
the gallery, then the gallery before training and the same six maps of it ("Compare with before training").

``precompute(run_dir, report, should_stop)`` is the one entry point (train and add call it after writing, the app
runs it as a background job, ``python -m embedder project RUN --all`` from the shell). It reads the run, computes
what is not stored yet, cheapest and most asked-for first, and stores each map as soon as it is done (a page can
open it while the rest are computed). Writes go through ``project._write_cached``: under the run's write lock, and
only while the run is still the one it read; a run swapped in meanwhile stops it (that run needs its own maps).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Cancelled, EmbedderError
from ..progress import Progress, Reporter, Stage, silent
from ..runs.bundle_read import run_version
from . import mapdata
from .project import MapKey, cached_project, fingerprint, map_file, stored_projection

NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# Relative cost of each map, for the share done and the time left (PCA is milliseconds; a t-SNE or UMAP fit and
# embedding the gallery again are each tens of seconds at the demo's size).
WEIGHT = {"pca": 0.02, "tsne": 1.0, "umap": 1.0, "before": 1.0}


@dataclass(frozen=True)
class MapSpec:
    """One map of a run: a method, 2 or 3 dimensions, of the gallery as trained or ``before`` training."""

    method: str
    dims: int
    before: bool = False

    def __str__(self) -> str:
        return f"{'before training: ' if self.before else ''}{NAMES[self.method]} {self.dims}-D"


_ORDER = (("pca", 2), ("pca", 3), ("tsne", 2), ("umap", 2), ("tsne", 3), ("umap", 3))
STANDARD = tuple(MapSpec(m, d, before) for before in (False, True) for m, d in _ORDER)


def fingerprint_of(run, before: bool) -> str | None:
    """The fingerprint the maps of the gallery (``before``: before training) are stored under; None while the
    gallery before training is not stored yet. Hashes the embeddings: a caller asking often keeps it."""
    if not before:
        return fingerprint(run.gallery_embeddings)
    emb = mapdata.stored_before(run)
    return None if emb is None else fingerprint(emb)


def map_key(run, spec: MapSpec, fp: str | None = None) -> str | None:
    """The file ``spec`` is stored under in ``run`` (``project.map_file``), given its ``fingerprint_of`` (computed
    when None); None for a map before training while the gallery before training is not stored yet."""
    fp = fingerprint_of(run, spec.before) if fp is None else fp
    if fp is None:
        return None
    return map_file(spec.method, spec.dims, fp, tag=f"before-{mapdata.before_kind(run)}" if spec.before else "")


def missing(run, specs: tuple[MapSpec, ...] = STANDARD) -> list[MapSpec]:
    """The maps of ``specs`` that ``run`` does not store yet (file names only: nothing is fitted)."""
    fps = {b: fingerprint_of(run, b) for b in {s.before for s in specs}}
    folder = Path(run.path) / "projections"
    out = []
    for spec in specs:
        key = map_key(run, spec, fps[spec.before]) if fps[spec.before] is not None else None
        if key is None or not (folder / key).is_file():
            out.append(spec)
    return out


def stored(run, spec: MapSpec, fp: str | None = None):
    """The stored ``Projection`` of ``spec`` (``fp``: see ``map_key``), or None when it is not stored yet."""
    key = map_key(run, spec, fp)
    if key is None:
        return None
    return stored_projection(run.path, len(run.gallery_paths), key, spec.method, spec.dims)


class _Meter:
    """The share of the work done and the time left, from the weights of what is done and the time it took."""

    def __init__(self, todo: list[str], report: Reporter, stop: Callable[[], bool]) -> None:
        self.total, self.done, self.started = sum(WEIGHT[w] for w in todo), 0.0, time.perf_counter()
        self.report, self.stop, self.ready, self.current = report, stop, [], ""

    def tick(self, share: float, weight: float) -> None:
        """``share`` of the current item (of ``weight``) done: report it; raise Cancelled when asked to stop."""
        if self.stop():
            raise Cancelled("computing the maps was cancelled")
        fraction = min(1.0, (self.done + share * weight) / self.total) if self.total else 1.0
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        extra = {"fraction": fraction, "eta_s": eta, "ready": list(self.ready), "current": self.current}
        self.report(Progress(Stage.MAP, done=round(100 * fraction), total=100, message=self.current, extra=extra))

    def finished(self, weight: float, name: str | None = None) -> None:
        self.done += weight
        if name is not None:
            self.ready.append(name)
        self.tick(0.0, 0.0)


def precompute(
    run_dir: str | os.PathLike,
    report: Reporter = silent,
    should_stop: Callable[[], bool] | None = None,
    specs: tuple[MapSpec, ...] = STANDARD,
) -> list[MapSpec]:
    """Compute and store the maps of ``specs`` that the run at ``run_dir`` lacks, in order; return the ones it
    stored. Progress goes to ``report`` as ``Stage.MAP`` reports whose ``extra`` holds ``fraction`` (0..1),
    ``eta_s`` (seconds left, None at first), ``ready`` (names of the maps stored so far) and ``current``.

    Safe beside writers: it holds no lock while it computes; each map is stored under the run's write lock and
    only into the run it read. When the run is swapped (a training or ``add`` wrote it) it stops with a note and
    returns what it stored. The maps before training are left out, with a note, when that network cannot be
    rebuilt (e.g. a run imported from ONNX).

    Raises:
        Cancelled: ``should_stop()`` became True (polled every few t-SNE iterations, every embedded batch and
            between maps; a UMAP fit, tens of seconds, runs to its end).
        EmbedderError: ``run_dir`` is not a readable run.
    """
    from ..runs.run import load_run

    stop = should_stop or (lambda: False)
    version = run_version(run_dir)
    run = load_run(run_dir)  # read after the version: a swap between the two only makes the stores refuse
    todo = missing(run, specs)
    if not todo:
        return []
    needs_before = any(s.before for s in todo) and mapdata.stored_before(run) is None
    meter = _Meter([s.method for s in todo] + (["before"] if needs_before else []), report, stop)
    done: list[MapSpec] = []
    before = None
    for spec in todo:
        meter.current = str(spec)
        meter.tick(0.0, 0.0)
        if spec.before and before is None:
            before = _before(run, version, meter, needs_before)
            if before is None:
                break
        emb = before if spec.before else run.gallery_embeddings
        tag = f"before-{mapdata.before_kind(run)}" if spec.before else ""
        weight = WEIGHT[spec.method]
        tick = lambda share, w=weight: meter.tick(share, w)  # noqa: E731
        key = MapKey(spec.method, spec.dims, tag=tag)
        cached_project(run.path, emb, key, run.gallery_labels, tick=tick, version=version)
        if run_version(run_dir) != version:
            report(Progress(Stage.NOTE, message="the run was rewritten while its maps were computed: stopped"))
            break
        if missing(run, (spec,)):  # another writer held the run past LOCK_WAIT: this map stays unstored
            report(Progress(Stage.NOTE, message=f"{spec}: not stored, another process was writing the run"))
            meter.finished(weight)
            continue
        done.append(spec)
        meter.finished(weight, str(spec))
    return done


def _before(run, version: str | None, meter: _Meter, compute: bool) -> np.ndarray | None:
    """The gallery before training (embedded now when ``compute``, with progress), or None with a note when that
    network cannot be rebuilt for this run."""
    meter.current = "the gallery before training"
    weight = WEIGHT["before"] if compute else 0.0
    try:
        progress = lambda d, t: meter.tick(d / max(t, 1), weight)  # noqa: E731
        before = mapdata.before_embeddings(run, progress=progress, version=version)
    except Cancelled:
        raise
    except EmbedderError as exc:
        meter.report(Progress(Stage.NOTE, message=f"no maps before training: {exc}"))
        return None
    meter.finished(weight)
    return before
