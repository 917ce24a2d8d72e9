"""``label`` on a growing folder against a 100,000-image gallery: memory must not grow with the folder (a batch of
images decoded at a time, k neighbours each from the run's index, rows appended as they come).

Each size runs in a fresh process (peak RSS is per process), after a baseline process that only loads the run and
answers one batch: the growth over that baseline is what labelling more images costs.

    python -m bench.bench_label_scale [--sizes 1000 10000] [--gallery 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from bench.common import peak_rss_mb
from embedder.runs.run import load_run
from embedder.verbs.label import LabelOptions, label_folder
run = load_run(sys.argv[1])
t0 = time.perf_counter()
done = label_folder(run, sys.argv[2], sys.argv[3], LabelOptions())
print(json.dumps({"images": done.answered, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}))
"""


def images(root: Path, n: int) -> Path:
    """``n`` generated 32-px images in nested folders (no class folders), made once."""
    import numpy as np
    from PIL import Image

    if (root / ".done").exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"part-{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    (root / ".done").write_text(str(n))
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000])
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--work", default="artifacts/bench-label-scale")
    args = ap.parse_args(argv)
    from tests.helpers import synthetic_run

    work = Path(args.work).resolve()
    run = work / f"gallery-{args.gallery}"
    if not (run / "config.json").exists():
        synthetic_run(run, n=args.gallery)
    rows = []
    for n in [64, *args.sizes]:  # 64: one batch, the baseline
        folder = images(work / f"images-{n}", n)
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(run), str(folder), str(Path(tmp) / "labels.csv")],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_mb"]
    for r in rows[1:]:
        print(
            f"{r['images']:>7,} images: peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] - base:+.0f} MB over one "
            f"batch), {r['images'] / r['seconds']:.0f} images/s; load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
