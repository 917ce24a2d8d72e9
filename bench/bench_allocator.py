"""Inference speed with glibc's default allocator (baseline) and after ``tune_allocator()``, in one process.

python -m bench.bench_allocator [--batches 3] [--size 224]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import time

import torch

from embedder.config import ModelConfig
from embedder.network.model import EmbeddingNet, tune_allocator


def throughput(model, x, batches: int) -> float:
    with torch.no_grad():
        model(x[:4])
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)
    return batches * len(x) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=3, help="batches of 64 images timed")
    ap.add_argument("--size", type=int, default=224, help="image side")
    args = ap.parse_args(argv)
    model = EmbeddingNet(ModelConfig(backbone="efficientnet_lite0", image_size=args.size)).eval()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(-3, 128 * 1024)  # back to glibc's defaults (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)
    libc.mallopt(-1, 128 * 1024)
    x = torch.randn(64, 3, args.size, args.size)
    base = throughput(model, x, args.batches)
    import embedder.network.model as m

    m._ALLOCATOR_TUNED = False
    tune_allocator()
    tuned = throughput(model, x, args.batches)
    print(f"EfficientNet-Lite0 forward, {args.size} px, {torch.get_num_threads()} threads")
    print(f"glibc defaults (baseline): {base:.1f} images/s")
    print(f"tune_allocator():          {tuned:.1f} images/s  -> {tuned / base:.2f}x")


if __name__ == "__main__":
    main()
