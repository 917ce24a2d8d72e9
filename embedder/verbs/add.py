"""Growing a run's gallery without retraining: new labelled images embedded with the run's own network, appended
to its gallery, the index rebuilt with the run's settings, and the run rewritten atomically.

    scan the folder -> leave out what the gallery has -> embed -> append -> index -> write

Labels come from the folder's sub-folders (``FOLDER/<label>/<image>``, as for training). A label the run knows
joins its class; any other becomes a new class at the end of the run's class list. The network is not trained
on the new images, and the run's metrics, "unknown" threshold and confidence calibration were measured before
they came: the run records what was added (``config.json`` -> ``additions``, ``metrics.json`` ->
``not_reevaluated``) and says so; ``python -m embedder evaluate`` measures the grown gallery again.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..answers import novelty
from ..errors import EmbedderError
from ..images.data import ImageSet, is_inside, scan_folder
from ..progress import Progress, Reporter, Stage, counter, silent
from ..runs.lock import training_under_way, writing
from ..runs.records import NotReevaluated
from ..runs.run import Run, is_run, load_run
from ..training.checkpoint import work_dir
from ..training.first import LABEL_FREE_MAX, pretrained_features
from .finish import index_gallery, write_run

NOT_REEVALUATED = (
    "the gallery grew after these metrics, the unknown threshold and the confidence calibration were measured; "
    "the network was not trained on the added images: run `python -m embedder evaluate` to measure it again"
)


@dataclass
class Added:
    """What ``add_images`` did, for the CLI and the app to report."""

    run_dir: Path
    added: int  # images appended to the gallery
    by_class: dict[str, int]  # added images per label
    new_classes: list[str]  # labels the run did not have before, in the order they were appended
    already_in_gallery: int  # files left out: the gallery holds them already
    held_out: int  # files left out: the run's held-out test queries (in the gallery they would answer themselves)
    skipped: str | None  # the scan's one-line report of unusable files, or None
    index: dict = field(default_factory=dict)  # the rebuilt index's stats

    def summary(self) -> str:
        """One line, e.g. ``added 120 images (zebra 60 new; cat 60); 3 already in the gallery``."""
        classes = "; ".join(
            f"{name} {n}{' new' if name in self.new_classes else ''}" for name, n in self.by_class.items()
        )
        left = [
            f"{self.already_in_gallery} already in the gallery" if self.already_in_gallery else "",
            f"{self.held_out} held-out test queries left out" if self.held_out else "",
            self.skipped or "",
        ]
        return "; ".join([f"added {self.added} images ({classes})", *filter(None, left)])


def embed_new(
    run: Run, paths: list[Path], device: str = "cpu", report: Reporter = silent, ray: str | None = None
) -> np.ndarray:
    """(N, D) embeddings of ``paths`` exactly as the gallery's were made: the run's network (torch or ONNX),
    transform, batch size and mirror averaging; images stream from disk a batch at a time. With ``ray`` (a
    cluster's address, or "" for a local instance) a pool of Ray actors computes the same embeddings."""
    progress = counter(report, Stage.EMBED, "the added images")
    if ray is None:
        return run.embed(paths, device=device, progress=progress)
    if run.onnx is not None:
        raise EmbedderError("--ray embeds with torch networks; an imported ONNX network embeds in this process")
    from ..network.ray_embed import embeddings_with_ray

    return embeddings_with_ray(
        run.model(), paths, address=ray, batch_size=run.train_config.batch_size_embed, progress=progress
    )


def _check_folders(run: Run, folder: Path) -> None:
    """Refuse a folder the rewrite would delete, and a run a training is still writing."""
    if is_inside(folder, run.path) or is_inside(run.path, folder):
        raise EmbedderError(
            f"the image folder {folder} overlaps the run folder {run.path}: the run is rewritten as a whole, "
            "so keep the images outside it"
        )
    if training_under_way(run.path):
        raise EmbedderError(
            f"a training of {run.path.name} is under way: the run it writes at its end would not hold these images; "
            "add them when it is done"
        )
    if work_dir(run.path).exists():
        raise EmbedderError(
            f"a training of {run.path.name} is under way or was interrupted (its checkpoints are in "
            f"{work_dir(run.path)}): let it finish, or resume it, before adding images"
        )


def _stored_path(run: Run, path: Path) -> str:
    """How the gallery names an image: relative to the run's data folder when inside it, else absolute."""
    return str(path.relative_to(run.data_root)) if path.is_relative_to(run.data_root) else str(path)


def _new_rows(run: Run, images: ImageSet) -> tuple[list[int], int, int]:
    """Rows of ``images`` to add, and how many were left out as already in the gallery or as held-out queries."""
    norm = os.path.normpath  # not resolve(): that is a system call per file, 100,000 of them
    gallery = {norm(f) for f in run.gallery_files()}
    held = {norm(p) for p in run.queries("test")[0]}
    rows, in_gallery, in_test = [], 0, 0
    for i, path in enumerate(images.paths):
        key = norm(path)
        if key in gallery:
            in_gallery += 1
        elif key in held:
            in_test += 1
        else:
            rows.append(i)
    return rows, in_gallery, in_test


def add_images(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    device: str = "cpu",
    progress: Reporter | None = None,
    ray: str | None = None,
) -> Added:
    """Add the labelled images of ``folder`` (``folder/<label>/<image>``) to the gallery of the run at
    ``run_dir`` and rewrite the run atomically (a failure at any point leaves the run as it was).

    Raises:
        EmbedderError: not a run, the folder missing, empty or overlapping the run, a training still writing the
        run, another writer holding it too long (``runs.lock``), or nothing new to add (every image is in the
        gallery already or is a held-out query).
    """
    report = progress or silent
    if not is_run(run_dir):  # refused (by load_run, in its words) before a lock file is made beside the folder
        load_run(run_dir)
    with writing(run_dir, report):  # read, append and write back as one: a second writer waits
        return _add(run_dir, folder, device, report, ray)


def _add(run_dir, folder, device: str, report: Reporter, ray: str | None) -> Added:
    run = load_run(run_dir)
    root = Path(folder).expanduser().resolve()
    _check_folders(run, root)
    images = scan_folder(root, progress=counter(report, Stage.SCAN), min_classes=1)
    result = _append(run, root, images, device, report, ray)
    _write(run, report)
    return result


def add_labelled(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    labelled: list[tuple[str, str]],
    device: str = "cpu",
    progress: Reporter | None = None,
) -> Added:
    """Add images already labelled, ``(path relative to folder, label)`` each (the Review page's accepted answers:
    no class folders needed), to the gallery of the run at ``run_dir``, as ``add_images`` does. The additions are
    logged in the run's corrections as one batch, so ``relabel.undo_last`` can take them back out.

    Raises:
        EmbedderError: what ``add_images`` refuses, a label that cannot name a class, or no image to add.
    """
    from ..images.labels import check_label
    from ..runs.corrections import Event, now, who

    report = progress or silent
    root = Path(folder).expanduser().resolve()
    pairs = [(root / rel, check_label(label)) for rel, label in labelled]
    if not pairs:
        raise EmbedderError("no images to add: accept some first")
    classes = sorted({label for _, label in pairs})
    index = {c: i for i, c in enumerate(classes)}
    images = ImageSet(root, [p for p, _ in pairs], np.array([index[lab] for _, lab in pairs], np.int64), classes)
    with writing(run_dir, report):
        run = load_run(run_dir)
        _check_folders(run, root)
        old_n = len(run.gallery_paths)
        result = _append(run, root, images, device, report, None)
        batch, by, at = run.corrections.next_batch(), who(), now()
        added = zip(run.gallery_paths[old_n:], run.label_names(run.gallery_labels[old_n:]))
        run.corrections.log += [Event(batch, "add", p, label, None, by, at) for p, label in added]
        _write(run, report)
        return result


def _append(run: Run, root: Path, images: ImageSet, device: str, report: Reporter, ray: str | None) -> Added:
    """The images of ``images`` that are new to the gallery, embedded and appended, the index rebuilt."""
    rows, in_gallery, in_test = _new_rows(run, images)
    if not rows:
        raise EmbedderError(
            f"nothing to add from {root}: of its {len(images)} images, {in_gallery} are in the gallery already "
            f"and {in_test} are held-out test queries of this run"
        )
    paths = [images.paths[i] for i in rows]
    names = [images.classes[images.labels[i]] for i in rows]
    new_classes = [c for c in dict.fromkeys(names) if c not in run.classes]
    classes = [*run.classes, *new_classes]
    index_of = {c: i for i, c in enumerate(classes)}
    emb = embed_new(run, paths, device, report, ray)  # (n, D)

    run.classes, old_n = classes, len(run.gallery_paths)
    run.gallery_paths = [*run.gallery_paths, *(_stored_path(run, p) for p in paths)]
    run.gallery_labels = np.concatenate([run.gallery_labels, np.array([index_of[n] for n in names], dtype=np.int64)])
    run.gallery_embeddings = np.concatenate([run.gallery_embeddings, emb]).astype(np.float32)
    run.label_free = _grown_label_free(run, paths, device, report)
    back = set(run.gallery_paths[old_n:])  # an image taken out before and added now is no longer "taken out"
    run.corrections.removed = [r for r in run.corrections.removed if r.path not in back]
    run._index = index_gallery(run.gallery_embeddings, run.train_config, report, previous=run.index())
    novelty.grow(run, old_n, report, run.train_config.seed, device)  # a new class is not novel
    result = Added(
        run.path, len(rows), dict(Counter(names)), new_classes, in_gallery, in_test, images.skipped_message()
    )
    _record(run, root, result)
    result.index = run._index.stats()
    return result


def _grown_label_free(run: Run, paths: list[Path], device: str, report: Reporter) -> np.ndarray | None:
    """The run's label-free features (first.py) with the added images' beside them, so their labels are judged where
    no label was learnt too; None when the run keeps none, or the gallery grows past what a run keeps."""
    if run.label_free is None or len(run.label_free) + len(paths) > LABEL_FREE_MAX:
        return None
    progress = counter(report, Stage.EMBED, "the added images, with the pretrained features")
    new = run.embed(paths, device=device, progress=progress, fn=pretrained_features(run.model_config).to(device))
    return np.concatenate([run.label_free, new.astype(np.float16)])


def _write(run: Run, report: Reporter) -> None:
    write_run(run, report)
    report(Progress(Stage.DONE, message=str(run.path)))


def _record(run: Run, root: Path, added: Added) -> None:
    """What was added, into the run: ``additions`` in config.json (the folder, so its images are never swept as
    unused), and ``not_reevaluated`` in metrics.json (what the stored numbers did not see)."""
    entry = {
        "folder": str(root),
        "images": added.added,
        "classes": added.by_class,
        "new_classes": added.new_classes,
        "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    run.info["additions"] = [*run.info.get("additions", []), entry]
    before = run.record.not_reevaluated or NotReevaluated()
    run.metrics["not_reevaluated"] = {
        "images": (before.images or 0) + added.added,
        "new_classes": [*before.new_classes, *added.new_classes],
        "note": NOT_REEVALUATED,
    }
