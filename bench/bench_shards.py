"""Sharded Annoy index against the single on-disk build, at a million gallery items: build time, the build's peak
memory, recall@10 and ms per query, next to exact float32 search batched in the same process.

The data is ``bench_knn``'s (a Gaussian mixture on the unit sphere, d=128, 1,000 classes, noise set so exact 1-NN
label accuracy is about 0.95); queries are never gallery items. Both indexes are built as the product builds them
(``index_shards.fill_annoy`` / ``build_shards``: one thread, in a file), with the product's 20 trees. Each build's
peak is the process's peak resident memory (VmHWM, reset before it through /proc/self/clear_refs) over its memory
before the build: the gallery itself is not counted. Queries are compared at equal work: the single index's
search_k against the same total spread over the shards (search_k / S inspected in each).

    python -m bench.bench_shards [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.bench_knn import CLASSES, DIM, SPREAD, K, recall
from bench.common import mixture, ms_per_call, rss_mb, table
from embedder.config import IndexConfig
from embedder.search.knn import squared_norms, topk
from embedder.search.shards import build_shards, fill_annoy

N_TREES = 20  # the product's default
# gallery size: (shard_items, queries, total search_k values)
FULL = {1_000_000: (250_000, 100, (64_000, 256_000))}
QUICK = {20_000: (5_000, 50, (4_000, 16_000))}
QUICK_SPREAD = 1.45  # between bench_knn's 10k and 100k noise: 20k items at about the same 1-NN accuracy


def vm_mb(key: str) -> float:
    """A /proc/self/status memory figure (VmRSS now, VmHWM the peak since the last reset) in MiB."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1]) / 1024


def measured(build):
    """(what ``build()`` returns, seconds, peak resident MiB over the memory before it or None where the peak
    cannot be reset)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux 4.0 on)
        resettable = True
    except OSError:
        resettable = False
    before, t0 = rss_mb(), time.perf_counter()
    result = build()
    seconds = time.perf_counter() - t0
    return result, seconds, (vm_mb("VmHWM") - before if resettable else None)


def query_row(name: str, annoy, queries, truth, search_k: int, baseline_ms: float) -> list:
    """recall@10 and ms per query (one at a time, as queries come) of an Annoy-like index at ``search_k``."""
    got = np.array([annoy.get_nns_by_vector(q.tolist(), K, search_k=search_k) for q in queries])
    it = iter(np.tile(queries, (4, 1)))
    ms = ms_per_call(lambda: annoy.get_nns_by_vector(next(it).tolist(), K, search_k=search_k), min(len(queries), 50))
    return [name, f"{recall(got, truth):.3f}", f"{ms:.3f}", f"{baseline_ms / ms:.1f}x"]


def size_section(n: int, shard_items: int, queries_n: int, search_ks) -> str:
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((CLASSES, DIM), np.float32)
    spread = SPREAD.get(n, QUICK_SPREAD)
    gallery, g_labels = mixture(n, centres, spread, rng)
    queries, q_labels = mixture(queries_n, centres, spread, rng)
    truth, _ = topk(queries, gallery, K)
    one_nn = float(np.mean(g_labels[truth[:, 0]] == q_labels))
    norms = squared_norms(gallery)
    batch = np.ascontiguousarray(np.resize(queries, (256, DIM)))
    batched = ms_per_call(lambda: topk(batch, gallery, K, gallery_norms=norms), 1) / 256
    config = IndexConfig(n_trees=N_TREES, shard_items=shard_items, on_disk_items=0)  # in files, like a big gallery
    sharded, shard_s, shard_mb = measured(lambda: build_shards(gallery, config))
    (single, single_file), single_s, single_mb = measured(lambda: fill_annoy(gallery, N_TREES, 0, on_disk=True))
    shards = len(sharded.parts)
    rows = [["exact numpy, batch 256", "1.000", f"{batched:.3f}", "1.0x"]]
    for total in search_ks:
        rows.append(query_row(f"single, search_k {total:,}", single, queries, truth, total, batched))
        rows.append(query_row(f"{shards} shards, search_k {total // shards:,} each", sharded, queries, truth,
                              total // shards, batched))  # fmt: skip
    single.unload()
    single_file.unlink()

    def mb(x):
        return "not measurable here" if x is None else f"**{x:.0f} MB**"

    ratio = f" ({single_mb / shard_mb:.1f}x less)" if single_mb and shard_mb else ""
    return "\n".join([
        f"### Sharded index: {n:,} gallery items in {shards} shards of {shard_items:,}, {queries_n} held-out queries",
        "",
        f"Build, 20 trees, one thread, in files: single index {single_s:.1f} s, peak {mb(single_mb)} over the "
        f"process before it; {shards} shards {shard_s:.1f} s ({shard_s / single_s:.2f}x the single build's time), "
        f"peak {mb(shard_mb)}{ratio}. The gallery itself ({gallery.nbytes / 2**20:.0f} MB) is in both baselines. "
        f"Exact 1-NN label accuracy {one_nn:.3f} (as hard as intended near 0.95).",
        "",
        table(["search", "recall@10", "ms/query", "speed vs exact batched"], rows),
    ])  # fmt: skip


def run(quick: bool, out=None) -> str:
    """The section for BENCHMARKS.md."""
    sizes = QUICK if quick else FULL
    head = (
        f"d={DIM}, {CLASSES:,} classes, bench_knn's noise; queries are never gallery items; k={K}. Times are the best "
        "of 3 passes on a shared 2-core machine; the exact baseline is `embedder.search.knn.topk`, 256 queries a batch."
    )
    return "\n\n".join([head, *(size_section(n, *spec) for n, spec in sizes.items())])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="20k items in 4 shards (CI)")
    args = ap.parse_args(argv)
    print(run(args.quick))


if __name__ == "__main__":
    main()
