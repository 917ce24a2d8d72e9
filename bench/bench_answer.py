"""How soon a run answers, and how well: train with the defaults and record the time until the run at --out
answers (its first answer, from features that need no training) and until training has finished, with the label
accuracy of each on queries never used for any choice, next to the plain pretrained features (photos) or raw
pixels (digits). The load average is recorded beside every time: the machine may be shared.

Sets as bench_labels.py names them, plus "photos245": 245 of the cats_dogs training photos (122 cats, 123 dogs,
a seeded draw), the 200 `val` photos as queries: a newcomer's small folder.

    python -m bench.bench_answer [--sets digits photos245 few finegrained photos] [--seed 0] [--json out.json]
        [--set cv_patience=4 ...]   (a recipe to compare: TrainConfig fields, values as JSON or plain text)

Run from an older checkout, the same script measures the previous recipe (it has no first answer: the run
answers when training has finished).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.bench_labels import SHARED, set_settings
from bench.progress import log
from embedder.config import TrainConfig
from embedder.verbs.pipeline import train


def photos245(root: Path, seed: int = 0) -> Path:
    """245 cats_dogs training photos, 122 cats and 123 dogs, drawn with ``seed``."""
    rng = random.Random(seed)
    for label, n in (("cat", 122), ("dog", 123)):
        photos = sorted((SHARED / "train" / label).iterdir())
        rng.shuffle(photos)
        (root / label).mkdir(parents=True, exist_ok=True)
        for photo in photos[:n]:
            shutil.copy(photo, root / label / photo.name)
    return root


def settings(name: str, tmp: Path) -> dict:
    if name == "photos245":
        data = tmp / "photos245" if (tmp / "photos245").exists() else photos245(tmp / "photos245")
        return {"data": str(data), "queries": str(SHARED / "val")}
    return set_settings(name, tmp)


def _accuracy(test: dict | None) -> dict | None:
    if not test:
        return None
    return {k: test.get(k) for k in ("precision_at_1", "knn_accuracy", "map_at_r")} | {
        "knn_accuracy_at_5": (test.get("knn_accuracy_by_k") or {}).get("5")
    }


def overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as TrainConfig fields: a value that reads as JSON is taken as such, else as text."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_one(name: str, seed: int, tmp: Path, recipe: dict | None = None) -> dict:
    """Train set ``name`` once (``recipe``: TrainConfig fields over the defaults); the times (with the load
    average then) and the accuracies at each."""
    cfg = TrainConfig(**settings(name, tmp) | (recipe or {}), out=f"{tmp}/{name}-{seed}", seed=seed)
    marks: dict = {}
    t0 = time.perf_counter()

    def watch(p) -> None:
        log(p)
        if str(p.stage) == "queryable" and "queryable" not in marks:
            marks["queryable"] = (time.perf_counter() - t0, os.getloadavg()[0])

    result = train(cfg, progress=watch)
    final = (time.perf_counter() - t0, os.getloadavg()[0])
    upgrade = result.metrics.get("upgrade") or {}
    first_test = _accuracy(result.metrics.get("test")) if upgrade.get("result") == "kept" else None
    if upgrade.get("result") == "replaced":
        first_test = {"knn_accuracy": (upgrade.get("before") or {}).get("test")}
    baselines = (result.metrics.get("test") or {}).get("baselines") or {}
    return {
        "set": name,
        "seed": seed,
        "recipe": recipe or {},
        "queryable_s": marks.get("queryable", final)[0],
        "queryable_load": marks.get("queryable", final)[1],
        "final_s": final[0],
        "final_load": final[1],
        "first_answer": first_test,
        "final": _accuracy(result.metrics.get("test")),
        "upgrade": upgrade.get("result"),
        "kept": result.kept,
        "history": [
            {k: h.get(k) for k in ("epoch", "seconds", "val_label_accuracy", "val_map_at_r", "best")}
            for h in result.history
        ],
        "baselines": {b: _accuracy(m) for b, m in baselines.items()},
    }


def summary(rows: list[dict]) -> None:
    print(f"\n{'set':<12} {'queryable':>10} {'final':>9}   first answer kNN  final P@1 / kNN / 5-NN   (load)")
    for r in rows:
        first = (r["first_answer"] or {}).get("knn_accuracy")
        f = r["final"] or {}
        cells = " / ".join(f"{f.get(k):.3f}" if f.get(k) is not None else "-" for k in (
            "precision_at_1", "knn_accuracy", "knn_accuracy_at_5"))  # fmt: skip
        print(
            f"{r['set']:<12} {r['queryable_s']:>9.0f}s {r['final_s']:>8.0f}s   "
            f"{first if first is None else f'{first:.3f}':>16}  {cells}   "
            f"({r['queryable_load']:.1f}, {r['final_load']:.1f}) {r['upgrade']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["digits", "photos245", "few", "finegrained"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows here as well")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="a recipe: TrainConfig fields")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(name, args.seed, Path(tmp), overrides(args.set)) for name in args.sets]
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
