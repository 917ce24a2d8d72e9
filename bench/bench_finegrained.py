"""A fine-grained set nobody has seen, generated on the spot: each class is one patch of scikit-learn's
bundled sample photos, 8 jittered views a class. Trains with the defaults and prints held-out and
class-disjoint retrieval next to the pretrained features, to check that fine-tuning never loses to them.

    python -m bench.bench_finegrained [--classes 40] [--per-class 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_images

from bench.progress import log
from embedder.config import TrainConfig
from embedder.verbs.pipeline import train


def make_patches(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    for c in range(classes):
        photo = photos[c % len(photos)]
        x, y = int(rng.integers(0, photo.width - 140)), int(rng.integers(0, photo.height - 140))
        folder = root / f"patch{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            dx, dy, s = int(rng.integers(-10, 11)), int(rng.integers(-10, 11)), int(rng.integers(110, 140))
            box = (max(0, x + dx), max(0, y + dy), min(photo.width, x + dx + s), min(photo.height, y + dy + s))
            view = ImageEnhance.Brightness(photo.crop(box)).enhance(float(rng.uniform(0.8, 1.2)))
            view.resize((160, 160)).save(folder / f"{i}.jpg", quality=90)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, default=40, help="number of classes (patches)")
    ap.add_argument("--per-class", type=int, default=8, help="views per class")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum epochs")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_patches(Path(tmp) / "patches", args.classes, args.per_class)
        t0 = time.perf_counter()
        result = train(TrainConfig(data=str(data), out=f"{tmp}/run", epochs=args.epochs), progress=log)
        seconds = time.perf_counter() - t0
    test = result.metrics["test"]
    print(f"kept: {result.kept}")
    rows = [("held-out images", test, test["baselines"].get("pretrained", {}))]
    if "class_disjoint" in test:
        cd = test["class_disjoint"]
        rows.append(("unseen classes", cd, cd.get("baselines", {}).get("pretrained", {})))
    print(f"{'protocol':<18}{'P@1':>7}{'MAP@R':>8}   pretrained: {'P@1':>5}{'MAP@R':>8}")
    for name, m, p in rows:
        print(
            f"{name:<18}{m['precision_at_1']:>7.3f}{m['map_at_r']:>8.3f}   {'':<12}"
            f"{p.get('precision_at_1', float('nan')):>5.3f}{p.get('map_at_r', float('nan')):>8.3f}  "
            f"-> MAP@R ratio {m['map_at_r'] / max(1e-9, p.get('map_at_r', 1)):.2f}"
        )
    print(f"epochs run: {len(result.history)}, wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
