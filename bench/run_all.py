"""Run every benchmark and write its results into BENCHMARKS.md between the generated-section markers (the
hand-written sections around them stay), with the recall-vs-QPS figure next to it.

    python -m bench.run_all [--quick] [--out FOLDER]

``make bench`` runs the full set (about 15 minutes on 2 idle cores); ``--quick`` is the CI run (about a minute).
The longer single experiments stay separate: python -m bench.bench_labels / bench_photos / bench_finegrained.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from bench import bench_embed, bench_knn, bench_map, bench_projection, bench_ray, bench_shards, bench_training

BEGIN = "<!-- bench.run_all: generated from here; edit by re-running, not by hand -->"
END = "<!-- bench.run_all: generated up to here -->"
ROOT = Path(__file__).resolve().parents[1]


def scale_section(quick: bool) -> str:
    """The scale benchmark (train + gallery + index + evaluate on generated images), when it is present."""
    if importlib.util.find_spec("bench.bench_scale") is None:
        return "### Scale\n\nNot run: bench/bench_scale.py is not in this checkout."
    if quick:
        return "### Scale\n\nNot run in --quick (it trains on 100k generated images): `python -m bench.bench_scale`."
    done = subprocess.run([sys.executable, "-m", "bench.bench_scale"], capture_output=True, text=True, cwd=ROOT)
    text = done.stdout.strip() or done.stderr.strip()[-2000:]
    return f"### Scale (python -m bench.bench_scale, exit {done.returncode})\n\n```\n{text}\n```"


def write(path: Path, generated: str) -> None:
    """Replace the generated part of ``path`` (or append it), keeping every other line."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n\n{generated.strip()}\n\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes: about a minute (CI)")
    ap.add_argument("--out", default=str(ROOT), help="folder of the BENCHMARKS.md to update and the figure")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, sections = time.perf_counter(), []
    benches = (("kNN", bench_knn), ("embedding", bench_embed), ("projection", bench_projection), ("ray", bench_ray),
               ("training", bench_training), ("sharded index", bench_shards), ("map", bench_map))  # fmt: skip
    for name, bench in benches:
        print(f"[{time.perf_counter() - t0:5.0f} s] {name} ...", flush=True)
        sections.append(bench.run(args.quick, out))
    print(f"[{time.perf_counter() - t0:5.0f} s] scale ...", flush=True)
    sections.append(scale_section(args.quick))
    head = (
        f"## Generated benchmarks (`python -m bench.run_all{' --quick' if args.quick else ''}`, "
        f"{time.perf_counter() - t0:.0f} s)\n\nEach figure is next to its baseline measured in the same process and "
        "the issue's goal; a missed goal says by how much."
    )
    write(out / "BENCHMARKS.md", "\n\n".join([head, *sections]))
    print(f"[{time.perf_counter() - t0:5.0f} s] wrote {out / 'BENCHMARKS.md'}", flush=True)


if __name__ == "__main__":
    main()
