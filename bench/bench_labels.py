"""Labels you can trust, measured: train with the defaults on several seeds and report, on queries never used for
any choice, the kept model's label accuracy (P@1, k-NN vote) and MAP@R next to the pretrained features and raw
pixels measured in the same run, plus how well its confidence is calibrated (ECE before and after).

Sets: "photos" (cats_dogs: train as gallery, val as queries), "few" (5 cats_dogs training photos a class as the
gallery, the same val queries), "finegrained" (generated patches of scikit-learn's
sample photos: 40 classes, 8 training and 4 query views each), "digits" (the demo, held-out split).

    python -m bench.bench_labels [--sets photos finegrained digits] [--seeds 0 1 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_finegrained import make_patches
from bench.progress import log
from embedder.config import LOSSES, TrainConfig
from embedder.verbs.pipeline import train

SHARED = Path(__file__).resolve().parents[2] / "shared/data/cats_dogs"
KEYS = ("precision_at_1", "knn_accuracy", "map_at_r", "knn_accuracy_at_5")  # knn_accuracy: at the run's k


def finegrained(root: Path, classes: int = 40, train_views: int = 8, query_views: int = 4) -> tuple[Path, Path]:
    """Generated fine-grained classes split into training views and separate query views."""
    make_patches(root / "all", classes, train_views + query_views, seed=0)
    for folder in sorted((root / "all").iterdir()):
        for view in sorted(folder.iterdir(), key=lambda p: int(p.stem)):
            part = "query" if int(view.stem) >= train_views else "train"
            (root / part / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(view, root / part / folder.name / view.name)
    return root / "train", root / "query"


def few_photos(root: Path, per_class: int = 5) -> Path:
    """The newcomer's case: the first ``per_class`` cats_dogs training photos of each class."""
    for folder in sorted((SHARED / "train").iterdir()):
        (root / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir())[:per_class]:
            shutil.copy(photo, root / folder.name / photo.name)
    return root


def set_settings(name: str, tmp: Path) -> dict:
    """The data settings of set ``name`` (its images generated under ``tmp`` the first time)."""
    if name == "photos":
        return {"data": str(SHARED / "train"), "queries": str(SHARED / "val")}
    if name == "few":
        data = tmp / "few" if (tmp / "few").exists() else few_photos(tmp / "few")
        return {"data": str(data), "queries": str(SHARED / "val")}
    if name == "finegrained":
        root = tmp / "finegrained"
        data, queries = (root / "train", root / "query") if root.exists() else finegrained(root)
        return {"data": str(data), "queries": str(queries), "unseen_classes": 0}
    return {"data": "demo"}


def run_one(name: str, seed: int, tmp: Path, **settings) -> dict:
    """Train on set ``name`` with the defaults but ``settings`` (selection, loss) and measure the kept model."""
    cfg = TrainConfig(**set_settings(name, tmp), out=f"{tmp}/{name}-{seed}", seed=seed, **settings)
    t0 = time.perf_counter()
    result = train(cfg, progress=log)
    test = result.metrics["test"]
    row = {
        "set": name,
        "seed": seed,
        "selection": cfg.selection,
        "loss": cfg.loss,
        "seconds": time.perf_counter() - t0,
        "kept": result.kept,
        "candidates": {
            name: [m.get("label_accuracy"), m.get("score_map_at_r")]
            for name, m in (result.metrics.get("validation_candidates") or {}).items()
        },
        "n_queries": test["n_queries"],
        "k": test["knn_k"],
        "k_why": (result.metrics.get("k") or {}).get("why"),
        "kept_model": _keys(test),
        "baselines": {b: _keys(m) for b, m in test["baselines"].items()},
    }
    cal = test.get("calibration") or {}
    row["ece"] = {"before": cal.get("before", {}).get("ece"), "after": (cal.get("after") or {}).get("ece")}
    row["confidence_mean"] = {when: _mean(cal.get(when), "confidence") for when in ("before", "after")}
    row["confidence_mean"]["right"] = _mean(cal.get("after"), "accuracy")  # over the same queries
    row["novelty"] = {**(test.get("novelty") or {}), **(result.metrics.get("novelty") or {})}  # false alarms
    return row


def _mean(diagram: dict | None, key: str) -> float | None:
    """The mean confidence (or share right) over the queries of a reliability diagram: a mean confidence above
    the share right claims too much."""
    if not diagram or not diagram.get("bins"):
        return None
    bins = diagram["bins"]
    return sum(b[key] * b["count"] for b in bins) / sum(b["count"] for b in bins)


def _keys(metrics: dict) -> dict:
    return {**{k: metrics[k] for k in KEYS[:3]}, "knn_accuracy_at_5": metrics["knn_accuracy_by_k"]["5"]}


def summary(rows: list[dict]) -> None:
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        print(f"\n{name}: {len(mine)} seeds, {mine[0]['n_queries']} queries each (mean ± half-range)")
        models = ["kept_model", *mine[0]["baselines"]]
        for model in models:
            cells = []
            for k in KEYS:
                vals = [r[model][k] if model == "kept_model" else r["baselines"][model][k] for r in mine]
                cells.append(f"{np.mean(vals):.3f} ± {(max(vals) - min(vals)) / 2:.3f}")
            print(f"  {model:<12} P@1 {cells[0]}   kNN (run's k) {cells[1]}   MAP@R {cells[2]}   5-NN {cells[3]}")
        eces = [(r["ece"]["before"], r["ece"]["after"]) for r in mine]
        print(
            "  ECE before/after: " + ", ".join(f"{b:.3f}/{a:.3f}" if a is not None else f"{b:.3f}/-" for b, a in eces)
        )
        for r in mine:
            print(f"  seed {r['seed']}: k = {r['k']}; kept {r['kept'][:140]}")
            said = r["confidence_mean"]
            if said["after"] is not None:
                print(
                    f"    mean confidence {said['before']:.3f} before, {said['after']:.3f} after; "
                    f"right {said['right']:.3f}"
                )
            novel = r.get("novelty") or {}
            if "novel" in novel:
                print(
                    f"    called unlike the gallery: {novel['novel']} of {novel['n']} queries "
                    f"(reference {novel['reference']} images, threshold {novel['threshold']:.3f})"
                )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=["photos", "finegrained", "digits"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--selection", default="auto", choices=("auto", "holdout", "cv"), help="how runs keep a model")
    ap.add_argument("--loss", default="triplet", choices=LOSSES, help="the training loss")
    ap.add_argument("--json", default=None, help="also write every row to this JSON file")
    args = ap.parse_args(argv)
    for name in [s for s in ("photos", "few") if s in args.sets and not SHARED.is_dir()]:
        print(f"skipped {name}: {SHARED} is not here (it comes with the team's shared folder)")
        args.sets.remove(name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            for seed in args.seeds:
                rows.append(run_one(name, seed, Path(tmp), selection=args.selection, loss=args.loss))
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    summary(rows)


if __name__ == "__main__":
    main()
