"""Gallery embedding throughput: the single-process ``embed_images`` (baseline: all cores as torch threads, and one
thread) against ``ray_embed.embed_with_ray`` with 1 and then 2 actors of 1 CPU each on a local Ray instance, on the
same generated images, in the same process. The machine's load average is printed: other jobs on the same cores
take what a second actor would get. The Ray instance is started once, before the timings (its start is reported apart);
each timing includes starting the actors and writing the shards. Best of ``--repeats`` runs each.

    python -m bench.bench_ray [--images 3000] [--side 96] [--image-size 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from embedder.config import ModelConfig
from embedder.images.transforms import eval_transform
from embedder.network.embed import embed_images
from embedder.network.model import EmbeddingNet
from embedder.network.ray_embed import embed_with_ray, import_ray, read_shards


def make_images(folder: Path, n: int, side: int, seed: int = 0) -> list[Path]:
    """``n`` JPEG files of a few random shapes on a noisy background: decoding costs what a small photo's does."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(120, 256, (side, side, 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y, r = (int(v) for v in rng.integers(0, side, 3))
            draw.ellipse(
                [x - r // 3, y - r // 3, x + r // 3, y + r // 3], fill=tuple(int(c) for c in rng.integers(0, 120, 3))
            )
        path = folder / f"{i:05d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(images: int, side: int, image_size: int, repeats: int) -> dict:
    """The timings: rows of (what, threads or actors, seconds), the Ray start, the load average around them."""
    ray = import_ray()
    torch.manual_seed(0)
    net = EmbeddingNet(ModelConfig(backbone="convnet", dim=128, image_size=image_size, resize="crop")).eval()
    transform = eval_transform(net.config)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        paths = make_images(Path(tmp), images, side)
        load, threads = os.getloadavg()[0], torch.get_num_threads()
        single, want = _best(lambda: embed_images(net, paths, transform), repeats)
        torch.set_num_threads(1)
        one_thread, _ = _best(lambda: embed_images(net, paths, transform), repeats)
        torch.set_num_threads(threads)
        rows = [
            ("single process, embed_images (baseline)", threads, single),
            ("single process, embed_images, 1 thread", 1, one_thread),
        ]
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        started = time.perf_counter() - t0
        try:
            for workers in (1, 2):
                out = Path(tmp) / "shards"

                def run(workers=workers, out=out):
                    shutil.rmtree(out, ignore_errors=True)
                    return read_shards(embed_with_ray(net.config, net.state_dict(), paths, out, workers=workers))

                seconds, got = _best(run, repeats)
                assert np.abs(got - want).max() < 1e-5, "Ray's embeddings differ from the single process's"
                rows.append((f"Ray, {workers} actor{'s' if workers > 1 else ''} x 1 CPU", workers, seconds))
        finally:
            ray.shutdown()
    return {"rows": rows, "started": started, "load": (load, os.getloadavg()[0]), "images": images,
            "side": side, "image_size": image_size, "repeats": repeats}  # fmt: skip


def report(m: dict) -> str:
    """The timings as the plain-text table BENCHMARKS.md quotes."""
    single = m["rows"][0][2]
    lines = [
        f"{m['images']} JPEGs of {m['side']} px, convnet at {m['image_size']} px, {os.cpu_count()} cores",
        f"load average {m['load'][0]:.1f} before, {m['load'][1]:.1f} after (other processes on these cores)",
        f"local Ray instance started in {m['started']:.1f} s (not in the timings); best of {m['repeats']}",
        f"{'':42} {'threads':>7} {'seconds':>8} {'images/s':>9} {'vs baseline':>11}",
    ]
    for name, threads, seconds in m["rows"]:
        lines.append(f"{name:42} {threads:>7} {seconds:>8.2f} {m['images'] / seconds:>9.0f} {single / seconds:>10.2f}x")
    lines.append(f"1 -> 2 Ray actors: {m['rows'][2][2] / m['rows'][3][2]:.2f}x the throughput")
    return "\n".join(lines)


def run(quick: bool, out: Path) -> str:
    """The section for BENCHMARKS.md (bench.run_all): 600 images once with --quick, else 3,000 best of 2."""
    m = measure(600 if quick else 3000, 96, 64, 1 if quick else 2)
    return f"### Gallery embedding on Ray: 1 -> 2 local actors\n\n```\n{report(m)}\n```"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=3000, help="generated images to embed")
    ap.add_argument("--side", type=int, default=96, help="side of the generated JPEGs in pixels")
    ap.add_argument("--image-size", type=int, default=64, help="the convnet's input side")
    ap.add_argument("--repeats", type=int, default=2, help="timings per configuration; the best is kept")
    args = ap.parse_args(argv)
    print(report(measure(args.images, args.side, args.image_size, args.repeats)))


if __name__ == "__main__":
    main()
