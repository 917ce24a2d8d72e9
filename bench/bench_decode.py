"""Decoding photos for training: full decode every epoch (baseline) against the in-memory reduced-scale
cache that training uses, measured in the same process over several epochs.

    python -m bench.bench_decode [--data ../shared/data/cats_dogs/train] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from embedder.images.data import load_image, scan_folder
from embedder.network.embed import DecodedImages


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/cats_dogs/train"),
        help="an ImageFolder of photos",
    )
    ap.add_argument("--epochs", type=int, default=3, help="passes over the images")
    ap.add_argument("--side", type=int, default=256, help="short side kept in the cache")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: no photo folder at {args.data} (pass --data FOLDER)")
        return
    paths = scan_folder(args.data).paths

    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for p in paths:
            load_image(p)
    full = time.perf_counter() - t0

    cache = DecodedImages(args.side)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for p in paths:
            cache(p)
    cached = time.perf_counter() - t0
    print(f"{len(paths)} images x {args.epochs} epochs")
    print(f"full decode every epoch (baseline): {full:.2f} s")
    print(f"reduced-scale decode, cached:       {cached:.2f} s  -> {full / cached:.1f}x faster")


if __name__ == "__main__":
    main()
