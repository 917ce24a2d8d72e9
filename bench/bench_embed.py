"""Embedding throughput and query latency, decode included, on generated 500x500 JPEGs.

Throughput: the real pipeline (``embed_images`` on file paths, as training and batch prediction call it) against
the model-only ceiling (the same forward passes on tensors already decoded and transformed) and a naive loop
(decode, transform, forward one image at a time). Latency: one upload -> label + neighbours against a 100k
gallery, split into decode, preprocess, forward, search and vote.

    python -m bench.bench_embed [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import mixture, table
from embedder.config import IndexConfig, ModelConfig
from embedder.images.decode import load_image
from embedder.images.transforms import eval_transform
from embedder.network import embed as embed_module
from embedder.network.embed import embed_images
from embedder.network.model import EmbeddingNet
from embedder.search.index import build_index
from embedder.search.vote import vote
from embedder.training.train import decoded_cache

SMALL = ModelConfig(backbone="convnet", image_size=32)
# name: (config, JPEG side, images through the pipeline/ceiling (full, quick), images through the naive loop)
MODELS = {
    "small CNN @32": (SMALL, 500, (2000, 64), (300, 16)),
    # the images `--backbone auto` gives the small CNN: a median short side of at most 64 px (plan.TINY_SIDE)
    "small CNN @32, 64 px images": (SMALL, 64, (4000, 64), (300, 16)),
    "Lite0 @224": (
        ModelConfig(
            backbone="efficientnet_lite0",
            image_size=224,
            resize="crop",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
        500,
        (2000, 40),  # enough for the one export of "as a run embeds" (1-2 s) to be a fair share of a pass
        (100, 10),
    ),  # fmt: skip
}


def jpegs(folder: Path, n: int, seed: int = 0, side: int = 500) -> list[Path]:
    """``n`` side x side JPEGs with smooth structure and noise (compress like photos, not like flat colour)."""
    rng, paths = np.random.default_rng(seed), []
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        f = rng.uniform(1, 8, size=3)
        img = np.stack([np.sin(f[c] * (xx + rng.uniform()) + f[(c + 1) % 3] * yy) for c in range(3)], -1)
        img = (127 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
        paths.append(folder / f"{side}-{i:05d}.jpg")
        Image.fromarray(img).save(paths[-1], quality=90)
    return paths


def throughput(model, config: ModelConfig, paths: list[Path], naive_n: int) -> dict[str, float]:
    """Images per second: pipeline (torch), the same as a run embeds (onnxruntime where it pays), ceiling (ready
    tensors, same batches, torch), naive one-at-a-time loop."""
    transform = eval_transform(config)
    t0 = time.perf_counter()
    embed_images(model, paths, transform, batch_size=64)
    pipeline = len(paths) / (time.perf_counter() - t0)
    threads, embed_module.decode_threads = embed_module.decode_threads, lambda: 1
    try:
        t0 = time.perf_counter()
        embed_images(model, paths, transform, batch_size=64)
        one_thread = len(paths) / (time.perf_counter() - t0)
    finally:
        embed_module.decode_threads = threads
    t0 = time.perf_counter()
    embed_images(model, paths, transform, batch_size=64, fast=True)  # as a run's gallery pass: its export timed too
    as_run = len(paths) / (time.perf_counter() - t0)
    side = decoded_cache(config).side  # what training decodes at: JPEGs at 1/2, 1/4 or 1/8 scale (draft)
    t0 = time.perf_counter()
    embed_images(model, paths, transform, batch_size=64, loader=partial(load_image, min_side=side))
    reduced = len(paths) / (time.perf_counter() - t0)
    ready = torch.stack([transform(load_image(p)) for p in paths[:256]])  # (256, 3, S, S)
    with torch.no_grad():
        t0, done = time.perf_counter(), 0
        while done < len(paths):
            b = min(64, len(paths) - done)
            model(ready[done % 256 : done % 256 + b] if done % 256 + b <= 256 else ready[:b])
            done += b
        ceiling = len(paths) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in paths[:naive_n]:
            model(transform(Image.open(p).convert("RGB"))[None])
        naive = naive_n / (time.perf_counter() - t0)
    return {"pipeline": pipeline, "ceiling": ceiling, "naive": naive, "one decode thread": one_thread,
            "reduced-scale decode": reduced, "as a run embeds": as_run}  # fmt: skip


def latency(model, config: ModelConfig, paths: list[Path], gallery_n: int, uploads: int) -> dict:
    """One upload at a time against a ``gallery_n`` gallery (the product's index choice): ms per stage."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((1000, config.dim), np.float32)
    gallery, labels = mixture(gallery_n, centres, 1.57, rng)
    probes, _ = mixture(200, centres, 1.57, rng)
    index = build_index(gallery, IndexConfig(), probes=probes)
    names = [str(c) for c in range(1000)]
    transform, stages = eval_transform(config), []
    with torch.no_grad():
        for p in (paths * 2)[:uploads]:
            data, t = p.read_bytes(), [time.perf_counter()]
            img = load_image(io.BytesIO(data))
            t.append(time.perf_counter())
            x = transform(img)[None]
            t.append(time.perf_counter())
            z = model(x).numpy()
            t.append(time.perf_counter())
            idx, dist = index.query(z, 10)
            t.append(time.perf_counter())
            vote([names[labels[j]] for j in idx[0]], dist[0].tolist())
            t.append(time.perf_counter())
            stages.append(np.diff(t) * 1000)
    s = np.array(stages)  # (uploads, 5)
    total = s.sum(1)
    return {"p50": np.percentile(total, 50), "p95": np.percentile(total, 95), "stages": np.median(s, 0),
            "method": index.method, "gallery": gallery_n}  # fmt: skip


def _verdict(ok: bool, by: str) -> str:
    return "met" if ok else f"**missed** ({by})"


def run(quick: bool, out: Path, throughput_only: bool = False) -> str:
    """The embedding throughput and query latency sections for BENCHMARKS.md."""
    torch.manual_seed(0)
    rows, lat_rows, notes = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, (config, side, n, naive_n) in MODELS.items():
            if side not in paths:
                most = max(m[quick] for _, s, m, _ in MODELS.values() if s == side)
                paths[side] = jpegs(Path(folder), most, 0, side)
            model = EmbeddingNet(config, load_pretrained=False).eval()
            model(torch.zeros(2, 3, config.image_size, config.image_size))  # warm-up: first call allocates
            tp = throughput(model, config, paths[side][: n[quick]], naive_n[quick])
            share, vs_naive = tp["pipeline"] / tp["ceiling"], tp["pipeline"] / tp["naive"]
            rows.append([name, n[quick], f"{tp['pipeline']:.1f}",
                         f"{tp['as a run embeds']:.1f} ({tp['as a run embeds'] / tp['pipeline']:.2f}x)",
                         f"{tp['one decode thread']:.1f}",
                         f"{tp['reduced-scale decode']:.1f} ({tp['reduced-scale decode'] / tp['ceiling']:.0%})",
                         f"{tp['ceiling']:.1f}", f"{tp['naive']:.1f}", f"{share:.0%}", f"{vs_naive:.1f}x"])  # fmt: skip
            short = f"{share:.0%}, {70 - 100 * share:.0f} points short"
            notes.append(
                f"- {name}: ≥ 70% of ceiling {_verdict(share >= 0.7, short)}; "
                f"≥ 3x naive {_verdict(vs_naive >= 3, f'{vs_naive:.1f}x')}."
            )
            if throughput_only or side != 500:  # an upload's latency is measured on the photos
                continue
            lat = latency(model, config, paths[side], 10_000 if quick else 100_000, 10 if quick else 60)
            goal = 50 if "small" in name else 150
            over = lat["p50"] - goal
            verdict = f"≤ {goal}: {_verdict(over <= 0, f'{over:+.0f} ms')}"
            lat_rows.append([name, f"{lat['gallery']:,} ({lat['method']})", f"{lat['p50']:.1f}", f"{lat['p95']:.1f}",
                             *(f"{v:.2f}" for v in lat["stages"]), verdict])  # fmt: skip
    return "\n".join([
        "### Embedding throughput (images/s, decode included)", "",
        "Generated 500x500 JPEGs (and 64x64 ones: the images `--backbone auto` gives the small CNN); load average "
        f"{os.getloadavg()[0]:.1f}. Pipeline: `embed_images` on file paths "
        "(batch 64, decoded and transformed in a pool of threads two batches ahead; 'one decode thread' the same "
        "with a pool of one; 'as a run embeds' the same with `fast=True`, as a run's gallery pass, add and batch "
        "predict call it: a fixed network through onnxruntime where the work pays for the export, the export "
        "timed; 'reduced-scale decode' the same with JPEGs decoded at 1/2-1/8 scale as training "
        "decodes them, not used for embedding: it changes the embeddings). "
        "Ceiling: the same model on tensors already decoded and transformed. Naive: decode, transform, forward, one "
        "image at a time. Networks untrained (speed does not depend on the weights).", "",
        table(["model", "images", "pipeline", "as a run embeds (/ pipeline)", "one decode thread",
               "reduced-scale decode (/ ceiling)",
               "model-only ceiling", "naive loop", "pipeline / ceiling", "pipeline / naive"], rows), "",
        "Goals (≥ 70% of ceiling, ≥ 3x naive):", *notes, "",
        "### Query latency: one upload -> label + neighbours", "",
        "Median ms per stage over uploads one at a time (500x500 JPEG bytes), the gallery searched the way the "
        "product's `build_index` chose for it.", "",
        table(["model", "gallery (search)", "p50 ms", "p95 ms", "decode", "preprocess", "forward", "search", "vote",
               "goal (p50)"], lat_rows),
    ])  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few images, a 10k gallery (CI)")
    ap.add_argument("--throughput-only", action="store_true", help="no upload latency (it builds a 100k index)")
    args = ap.parse_args(argv)
    print(run(args.quick, Path("."), args.throughput_only))


if __name__ == "__main__":
    main()
