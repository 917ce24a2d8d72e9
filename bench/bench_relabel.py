"""The labelling loop, measured: planted wrong labels found, fixed and learned from; new images labelled.

For each set a clean copy and a copy with planted wrong labels (files copied into another class's folder) are
trained with the defaults, beside held-out queries that are clean and never used for any choice. Then:

- the mislabel ranking (``mislabels --json``, ours) next to cleanlab's ``find_label_issues`` on the same
  leave-one-out k-NN vote probabilities: how many planted errors each puts in its top 30;
- ``relabel`` with the top 30 suggestions: planted errors fixed, right labels changed, every image file
  byte-identical before and after;
- held-out P@1 of the clean run, the planted run, the planted run with its gallery corrected (no retraining) and
  a retraining with ``--labels`` (the corrections as a CSV), each with a 95% Wilson interval;
- ``label`` on the held-out queries as an unlabelled folder (the clean run): how many answers reach confidence
  0.95, and how many of those are right.

Sets: "digits" (the demo: 300 queries, 30 a class; 1,497 images with 20 labels flipped to another digit) and
"photos" (../shared/data/cats_dogs: the 400 train photos with 5% = 20 flipped, the 200 val photos as queries).

    python -m bench.bench_relabel [--sets digits photos] [--work DIR] [--json results.json] [--selection auto]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from bench.progress import log
from embedder.config import TrainConfig
from embedder.verbs.pipeline import train

SHARED = Path(__file__).resolve().parents[2] / "shared/data/cats_dogs"
PLANTED = 20  # wrong labels planted in each set
TOP = 30  # suggestions accepted
QUERIES_PER_CLASS = 30  # digits: the 300 new digits


def _copy_tree(pairs: list[tuple[Path, str]], root: Path) -> list[Path]:
    """Copy (file, class) pairs into ``root/<class>/``; returns the copies."""
    out = []
    for src, label in pairs:
        (root / label).mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy(src, root / label / src.name)))
    return out


def digits_files(seed: int = 0) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The demo digits as (file, label): the gallery's and 30 queries a class, drawn with ``seed``."""
    from embedder.images.data import demo_dataset

    demo, rng = demo_dataset(), np.random.default_rng(seed)
    data, queries = [], []
    for d in range(10):
        files = sorted((demo / str(d)).glob("*.png"))
        picked = set(rng.choice(len(files), QUERIES_PER_CLASS, replace=False).tolist())
        for i, f in enumerate(files):
            (queries if i in picked else data).append((f, str(d)))
    return data, queries


def photos_files() -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """cats_dogs as (file, label): train photos for the gallery, val photos as queries."""
    part = lambda name: [(f, c.name) for c in sorted((SHARED / name).iterdir()) for f in sorted(c.iterdir())]
    return part("train"), part("val")


def plant(data: list[tuple[Path, str]], n: int, seed: int) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """``n`` files given another class (drawn with ``seed``): the planted list, and {file name: true label}."""
    rng = np.random.default_rng(seed + 100)
    classes = sorted({label for _, label in data})
    rows = rng.choice(len(data), n, replace=False)
    planted, truth = list(data), {}
    for r in rows:
        f, label = data[r]
        planted[r] = (f, str(rng.choice([c for c in classes if c != label])))
        truth[f.name] = label
    return planted, truth


def prepare(name: str, work: Path, seed: int = 0) -> dict:
    """The set's folders under ``work/name``: clean data, planted data, queries (made once)."""
    root = work / name
    truth_file = root / "planted.json"
    if not truth_file.exists():
        data, queries = digits_files(seed) if name == "digits" else photos_files()
        planted, truth = plant(data, PLANTED, seed)
        shutil.rmtree(root, ignore_errors=True)
        _copy_tree(data, root / "clean")
        _copy_tree(planted, root / "planted")
        _copy_tree(queries, root / "queries")
        truth_file.write_text(json.dumps(truth, indent=1))
    return {
        "clean": root / "clean",
        "planted": root / "planted",
        "queries": root / "queries",
        "truth": json.loads(truth_file.read_text()),
        "runs": root / "runs",
    }


def trained(data: Path, out: Path, queries: Path, seed: int, selection: str, labels: Path | None = None) -> Path:
    """A run trained with the defaults on ``data`` (reused when ``out`` is a run already)."""
    from embedder.runs.run import is_run

    if not is_run(out):
        extra = {"labels": str(labels)} if labels is not None else {}
        cfg = TrainConfig(data=str(data), out=str(out), queries=str(queries), seed=seed, selection=selection, **extra)
        train(cfg, progress=log)
    return out


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``: proof that nothing touched the user's images."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=["digits", "photos"], choices=("digits", "photos"))
    ap.add_argument("--work", default="artifacts/bench-relabel", help="folder for the copies and runs (reused)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--selection", default="auto", choices=("auto", "holdout", "cv"))
    ap.add_argument("--train-only", action="store_true", help="train the clean and planted runs, then stop")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    for name in args.sets:
        s = prepare(name, work, args.seed)
        for which in ("clean", "planted"):
            trained(s[which], s["runs"] / which, s["queries"], args.seed, args.selection)
        if args.train_only:
            continue


if __name__ == "__main__":
    main()
