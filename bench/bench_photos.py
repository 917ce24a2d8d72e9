"""The real-photo recipe end to end: train on a photo folder with the defaults, evaluate on a separate
query folder, and print the trained model next to the pretrained features it started from.

    python -m bench.bench_photos [--train ../shared/data/cats_dogs/train] [--val ../shared/data/cats_dogs/val]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.progress import log
from embedder.config import TrainConfig
from embedder.verbs.pipeline import train

SHARED = Path(__file__).resolve().parents[2] / "shared/data/cats_dogs"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", default=str(SHARED / "train"), help="ImageFolder to train on (the gallery)")
    ap.add_argument("--val", default=str(SHARED / "val"), help="ImageFolder of queries")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum epochs")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(
            TrainConfig(data=args.train, queries=args.val, out=f"{tmp}/run", epochs=args.epochs), progress=log
        )
        seconds = time.perf_counter() - t0
    test = result.metrics["test"]
    pre = test["baselines"].get("pretrained", {})
    print(f"kept: {result.kept}")
    print(f"{'':<22}{'P@1':>7}{'MAP@R':>8}{'kNN':>7}")
    for name, m in (("trained", test), ("pretrained (baseline)", pre), ("raw pixels", test["baselines"]["raw_pixels"])):
        print(
            f"{name:<22}{m.get('precision_at_1', float('nan')):>7.3f}{m.get('map_at_r', float('nan')):>8.3f}"
            f"{m.get('knn_accuracy', float('nan')):>7.3f}"
        )
    if pre:
        print(
            f"P@1 errors: {1 - test['precision_at_1']:.3f} vs {1 - pre['precision_at_1']:.3f} "
            f"-> {(1 - pre['precision_at_1']) / max(1e-9, 1 - test['precision_at_1']):.1f}x fewer than the baseline"
        )
    print(f"epochs run: {len(result.history)}, wall time {seconds:.0f} s (train + gallery + evaluation + baselines)")


if __name__ == "__main__":
    main()
