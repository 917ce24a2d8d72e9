"""Neighbour search: the Annoy grid (n_trees x search_k) and the HNSW graph's search depths against exact float32
search, on data as hard as real embeddings, and what the product's own ``build_index`` picks among the three.

Gallery and queries are drawn from one Gaussian mixture on the unit sphere (d=128, 1,000 classes, noise set so
exact 1-NN label accuracy is about 0.95); queries are never gallery items, and ``build_index`` tunes on a third,
separate draw. Baselines: exact search one query at a time (numpy BLAS matrix-vector product + argpartition, which
is the product's exact path; and torch) and 256 at a time (``embedder.search.knn.topk``; torch matmul + topk).
For the largest size, a fresh process loads what a run serves from (the gallery, the Annoy file memory-mapped,
the graph read) and answers queries: its peak RSS against the gallery's raw size. The three graph libraries are
compared in ``bench_graph``.

    python -m bench.bench_knn [--quick] [--sizes 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from annoy import AnnoyIndex

from bench.common import mixture, ms_per_call, rss_mb, table
from embedder.config import IndexConfig
from embedder.search.graph import build_graph
from embedder.search.index import build_index, open_index
from embedder.search.knn import squared_norms, topk

DIM, CLASSES, K = 128, 1000, 10
# The noise that puts exact 1-NN label accuracy near 0.95 at each size (measured: a bigger gallery has nearer
# neighbours of the right class, so it takes more noise).
SPREAD = {10_000: 1.4, 100_000: 1.57, 1_000_000: 1.68}
# size: (queries, n_trees values, search_k values). The 1M grid is coarse to keep `make bench` within 15 minutes.
FULL = {
    10_000: (300, (10, 50), (500, 2_000, 8_000, 32_000)),
    100_000: (300, (10, 50), (1_000, 4_000, 16_000, 64_000, 256_000)),
    1_000_000: (100, (20, 80), (4_000, 16_000, 64_000, 256_000)),
}
QUICK = {10_000: (50, (10,), (500, 4_000))}
EFS = (16, 32, 64, 128, 256, 512)  # the graph's search depths on the curve


def vote(labels: np.ndarray) -> np.ndarray:
    """(Q, k) neighbour labels -> (Q,) the majority label (ties: the lower label)."""
    return np.array([np.bincount(row).argmax() for row in labels])


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got, truth)]))


def torch_topk_batched(q: torch.Tensor, g: torch.Tensor, k: int, step: int = 131_072) -> torch.Tensor:
    """Largest dot products (unit vectors: nearest), the gallery in chunks so 256 x 1M never exists at once."""
    best_s, best_i = None, None
    for s in range(0, len(g), step):
        sc, ix = torch.topk(q @ g[s : s + step].T, k, dim=1)
        if best_s is not None:
            sc, pos = torch.topk(torch.cat([best_s, sc], 1), k, dim=1)
            ix = torch.gather(torch.cat([best_i, ix + s], 1), 1, pos)
            best_s, best_i = sc, ix
        else:
            best_s, best_i = sc, ix + s
    return best_i


def exact_baselines(gallery: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """ms per query of each exact baseline, in this process."""
    norms, g = squared_norms(gallery), torch.from_numpy(gallery)
    it = iter(np.tile(queries, (20, 1)))
    batch = np.ascontiguousarray(np.resize(queries, (256, queries.shape[1])))
    n = min(len(queries), 50 if len(gallery) >= 1_000_000 else 100)
    with torch.no_grad():
        return {
            "exact numpy, 1 query": ms_per_call(lambda: topk(next(it)[None], gallery, K, gallery_norms=norms), n),
            "exact torch, 1 query": ms_per_call(lambda: torch.topk(g @ torch.from_numpy(next(it)), K), n),
            "exact numpy, batch 256": ms_per_call(lambda: topk(batch, gallery, K, gallery_norms=norms), 1) / 256,
            "exact torch, batch 256": ms_per_call(lambda: torch_topk_batched(torch.from_numpy(batch), g, K), 1) / 256,
        }


def annoy_grid(gallery, queries, truth, labels, exact_vote, n_trees_grid, search_ks, folder: Path) -> list[dict]:
    """One row per (n_trees, search_k): recall@10, ms per query, build/load time, file size, label agreement."""
    rows = []
    for n_trees in n_trees_grid:
        t0, rss0 = time.perf_counter(), rss_mb()
        annoy = AnnoyIndex(DIM, "angular")
        annoy.set_seed(0)
        for i, v in enumerate(gallery):
            annoy.add_item(i, v.tolist())
        annoy.build(n_trees, n_jobs=-1)  # both cores: the bench's build time is the fastest this machine gives
        build_s, build_mb = time.perf_counter() - t0, rss_mb() - rss0
        path = folder / f"grid-{len(gallery)}-{n_trees}.ann"
        annoy.save(str(path))
        annoy.unload()
        del annoy
        t0 = time.perf_counter()
        loaded = AnnoyIndex(DIM, "angular")
        loaded.load(str(path))  # mmap
        load_s = time.perf_counter() - t0
        for search_k in search_ks:
            got = np.array([loaded.get_nns_by_vector(v.tolist(), K, search_k=search_k) for v in queries])
            it = iter(np.tile(queries, (4, 1)))
            ms = ms_per_call(
                lambda a=loaded, i=it, s=search_k: a.get_nns_by_vector(next(i).tolist(), K, search_k=s), 100, 2
            )
            rows.append(
                dict(n_trees=n_trees, search_k=search_k, recall=recall(got, truth), ms=ms, build_s=build_s,
                     build_mb=build_mb, load_s=load_s, size_mb=path.stat().st_size / 2**20,
                     agree=float(np.mean(vote(labels[got]) == exact_vote)))
            )  # fmt: skip
        loaded.unload()
        path.unlink()
    return rows


def graph_curve(graph, gallery, queries, truth, labels, exact_vote) -> list[dict]:
    """The graph at each search depth as the product answers (candidates re-ranked): recall@10, ms per query."""
    rows = []
    for ef in EFS:
        got = graph.query(queries, gallery, K, ef)[0]
        it = iter(np.tile(queries, (4, 1)))
        ms = ms_per_call(lambda e=ef, i=it: graph.query(next(i)[None], gallery, K, e), 100, 2)
        rows.append(
            dict(ef=ef, recall=recall(got, truth), ms=ms, agree=float(np.mean(vote(labels[got]) == exact_vote)))
        )
    return rows


def best_threads(fn, calls: int) -> float:
    """ms per call of exact search at its best: with one BLAS thread and with all of them (on a loaded machine
    BLAS threads waiting for each other's time slices make one query 30x slower than one thread; on a quiet one two
    threads read the gallery faster)."""
    from threadpoolctl import threadpool_limits

    times = []
    for limit in (1, None):
        with threadpool_limits(limits=limit, user_api="blas"):
            times.append(ms_per_call(fn, calls))
    return min(times)


def product_pick(gallery, probes, queries, truth) -> dict:
    """What ``build_index`` (defaults, tuned on its own held-out probes) picks, and each option on the test
    queries: recall@10 and ms per query one at a time, in this process."""
    t0, rss0 = time.perf_counter(), rss_mb()
    index = build_index(gallery, IndexConfig(), probes=probes)
    build_s, build_mb = time.perf_counter() - t0, rss_mb() - rss0
    n = min(len(queries), 50)
    method, kept = index.method, (index.gallery, index._frame)
    index.gallery = gallery  # time every option the way the index answers by it
    options = {}
    for option in ("exact", "annoy", "graph") if index.graph is not None else ("exact", "annoy"):
        index.method = option
        got, _ = index.query(queries, K)
        it = itertools.cycle(queries)  # each option its own pass over the queries, as many calls as it takes
        timed = lambda i=it: index.query(next(i)[None], K)
        options[option] = (recall(got, truth), best_threads(timed, n) if option == "exact" else ms_per_call(timed, n))
    index.method, (index.gallery, index._frame) = method, kept
    return {"method": index.method, "stats": index.stats(), "build_s": build_s, "build_mb": build_mb,
            "options": options, "index": index}  # fmt: skip


def vm_mb(key: str) -> float:
    """A /proc/self/status memory figure (VmRSS now, VmHWM the peak so far) in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def serve(folder: Path) -> dict:
    """In a fresh process: load what a run serves from (the float32 gallery read whole, as ``Run`` reads it; the
    Annoy file memory-mapped by ``load_index``), answer the queries one at a time, and report memory."""
    base = vm_mb("VmRSS")  # the interpreter, numpy, torch and embedder imported
    gallery = np.load(folder / "gallery.npy", allow_pickle=False)
    index = open_index(folder, gallery, json.loads((folder / "stats.json").read_text()))
    loaded = vm_mb("VmRSS")
    queries = np.load(folder / "queries.npy", allow_pickle=False)
    t0 = time.perf_counter()
    for q in queries:
        index.query(q[None], K)
    ms = 1000 * (time.perf_counter() - t0) / len(queries)
    return dict(base_mb=base, loaded_mb=loaded, end_mb=vm_mb("VmRSS"), peak_mb=vm_mb("VmHWM"), ms=ms,
                queries=len(queries), method=index.method)  # fmt: skip


def serving_memory(index, gallery: np.ndarray, queries: np.ndarray, folder: Path) -> list[dict]:
    """Save the product's index and gallery, and measure ``serve`` in a child process (its peak is its own): as the
    product answers (its pick), and by Annoy when the pick is not Annoy (the mapped file then counts in the RSS)."""
    names = index.save_into(folder)
    np.save(folder / "gallery.npy", gallery)
    np.save(folder / "queries.npy", queries)
    root, found = Path(__file__).resolve().parents[1], []
    for method in dict.fromkeys([index.method, "annoy"]):
        stats = index.stats() if method == index.method else {k: v for k, v in index.stats().items() if k != "graph"}
        (folder / "stats.json").write_text(json.dumps({**stats, "method": method}))
        done = subprocess.run([sys.executable, "-m", "bench.bench_knn", "--serve", str(folder)], cwd=root,
                              capture_output=True, text=True, timeout=1800)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"serving child failed: {done.stderr[-1000:]}")
        found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    graph_mb = sum((folder / r["file"]).stat().st_size for r in index.stats().get("graph", [])) / 2**20
    for m in found:
        m.update(gallery_mb=gallery.nbytes / 2**20, file_mb=(folder / "index.ann").stat().st_size / 2**20,
                 graph=f", the {graph_mb:.0f} MB graph read" if graph_mb else "")  # fmt: skip
    for name in (*names, "gallery.npy", "queries.npy", "stats.json"):
        (folder / name).unlink()
    return found


def serving_line(n: int, found: list[dict], build_mb: float, search_k: int) -> str:
    m = found[0]
    line = (
        f"\nServing memory at {n:,} items (a fresh process loads the run-like state — the {m['gallery_mb']:.0f} MB "
        f"float32 gallery read whole, the {m['file_mb']:.0f} MB Annoy file memory-mapped{m['graph']} — and answers "
        f"{m['queries']} "
        f"queries one at a time by the pick, {m['method']}, {m['ms']:.2f} ms each): peak RSS **{m['peak_mb']:.0f} MB** "
        f"(VmHWM), of which {m['base_mb']:.0f} MB is the interpreter with numpy/torch/embedder imported; "
        f"{m['loaded_mb'] - m['base_mb']:.0f} MB after loading, {m['end_mb'] - m['base_mb']:.0f} MB after the "
        f"queries = {(m['peak_mb'] - m['base_mb']) / m['gallery_mb']:.2f}x the gallery's raw size."
    )
    for a in found[1:]:
        line += (
            f" Answered by Annoy instead (search_k {search_k:,}, {a['ms']:.2f} ms each): peak RSS "
            f"**{a['peak_mb']:.0f} MB**, {a['end_mb'] - a['base_mb']:.0f} MB over the imports after the queries "
            f"(the index pages they touched included) = {(a['peak_mb'] - a['base_mb']) / a['gallery_mb']:.2f}x."
        )
    return line + f" Building the index grew the bench process by {build_mb:.0f} MB (RSS after minus before)."


def size_section(
    n: int, queries_n: int, n_trees_grid, search_ks, folder: Path, serving: bool = False
) -> tuple[str, dict]:
    """Everything for one gallery size: (markdown, curve data for the figure); with ``serving``, also the serving
    process's memory."""
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((CLASSES, DIM), np.float32)
    gallery, g_labels = mixture(n, centres, SPREAD[n], rng)
    queries, q_labels = mixture(queries_n, centres, SPREAD[n], rng)
    probes, _ = mixture(IndexConfig().recall_sample, centres, SPREAD[n], rng)
    truth, _ = topk(queries, gallery, K)
    exact_vote = vote(g_labels[truth])
    one_nn = float(np.mean(g_labels[truth[:, 0]] == q_labels))
    base = exact_baselines(gallery, queries)
    grid = annoy_grid(gallery, queries, truth, g_labels, exact_vote, n_trees_grid, search_ks, folder)
    pick = product_pick(gallery, probes, queries, truth)
    t0 = time.perf_counter()
    graph = pick["index"].graph or build_graph(gallery, IndexConfig())  # the product's own, or one like it
    graph_s = None if pick["index"].graph is not None else time.perf_counter() - t0
    curve = graph_curve(graph, gallery, queries, truth, g_labels, exact_vote)
    del graph
    served = serving_memory(pick.pop("index"), gallery, queries, folder) if serving else None
    single = base["exact numpy, 1 query"]
    rows = [[name, "1.000", f"{ms:.3f}", f"{1000 / ms:,.0f}", f"{single / ms:.1f}x", "1.000", "", "", "", ""]
            for name, ms in base.items()]  # fmt: skip
    rows += [
        [f"annoy {r['n_trees']} trees, search_k {r['search_k']:,}", f"{r['recall']:.3f}", f"{r['ms']:.3f}",
         f"{1000 / r['ms']:,.0f}", f"{single / r['ms']:.1f}x", f"{r['agree']:.3f}", f"{r['build_s']:.1f}",
         f"{r['size_mb']:.0f}", f"{1000 * r['load_s']:.1f}", f"{r['build_mb']:.0f}"]
        for r in grid
    ]  # fmt: skip
    rows += [
        [f"graph (Voyager HNSW), ef {r['ef']}", f"{r['recall']:.3f}", f"{r['ms']:.3f}", f"{1000 / r['ms']:,.0f}",
         f"{single / r['ms']:.1f}x", f"{r['agree']:.3f}", "" if graph_s is None else f"{graph_s:.1f}", "", "", ""]
        for r in curve
    ]  # fmt: skip
    header = ["search", "recall@10", "ms/query", "QPS", "speed vs exact 1-query", "kNN label = exact's",
              "build s", "file MB", "load ms", "build RSS MB"]  # fmt: skip
    md = [f"### kNN: {n:,} gallery items, {queries_n} held-out queries (load average {os.getloadavg()[0]:.1f})", "",
          f"Exact 1-NN label accuracy: **{one_nn:.3f}** (the data is as hard as intended when this is about 0.95).",
          "", table(header, rows), "", pick_lines(n, pick), goal_line(n, pick)]  # fmt: skip
    if served:
        md.append(serving_line(n, served, pick["build_mb"], pick["stats"]["search_k"]))
    curves = {"grid": grid, "exact": base, "n": n, "graph": curve}
    return "\n".join(md), curves


def pick_lines(n: int, pick: dict) -> str:
    s, opts = pick["stats"], pick["options"]
    graph = (
        f", the graph {s['graph_ms']:.3f} ms at recall@10 {s['graph_recall_at_10']:.3f} (ef {s.get('ef') or '-'})"
        if s.get("graph_ms") is not None
        else ""
    )
    tested = ", ".join(f"{name} recall {r:.3f} at {ms:.3f} ms" for name, (r, ms) in opts.items())
    return (
        f"The product (`build_index`, defaults, {pick['build_s']:.1f} s) picks **{pick['method']}**: on its "
        f"{s['probes']} probes exact {s['exact_ms']:.3f} ms/query vs Annoy {s['annoy_ms']:.3f} ms at recall@10 "
        f"{s['annoy_recall_at_10']:.3f} (search_k {s['search_k']:,}, {s['n_trees']} trees){graph}. On the test "
        f"queries, one at a time in this process: {tested}."
    )


def goal_line(n: int, pick: dict) -> str:
    """The issue's goal for this size, met or missed by how much, for the product's own pick on the test queries."""
    options = pick["options"]
    (r, ms), exact_ms = options[pick["method"]], options["exact"][1]
    if n >= 1_000_000:
        speed = exact_ms / ms
        ok = r >= 0.95 and speed >= 10
        verdict = "met" if ok else f"**missed** (recall {r:.3f}, {speed:.1f}x)"
        return (
            f"\nGoal at 1M: the product's pick reaches recall@10 >= 0.95 at >= 10x exact float32 single-query "
            f"speed — {verdict}: {pick['method']} recall {r:.3f} at {ms:.3f} ms vs exact {exact_ms:.3f} ms "
            f"= {speed:.1f}x."
        )
    dominated = [o for o, (ro, mo) in options.items() if o != pick["method"] and ro > r and mo < ms]
    return (
        f"\nGoal: the pick is never both slower and less exact than another option — "
        f"{'**missed** (' + ', '.join(dominated) + ')' if dominated else 'met'}."
    )


def figure(curves: list[dict], path: Path) -> None:
    """Recall@10 against queries per second, one panel per gallery size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        for n_trees in sorted({r["n_trees"] for r in c["grid"]}):
            pts = [r for r in c["grid"] if r["n_trees"] == n_trees]
            ax.plot([1000 / r["ms"] for r in pts], [r["recall"] for r in pts], "o-", label=f"annoy {n_trees} trees")
        pts = c.get("graph", [])
        ax.plot([1000 / r["ms"] for r in pts], [r["recall"] for r in pts], "o-", color="black", label="graph (HNSW)")
        for (name, ms), marker in zip(c["exact"].items(), "s^Dv"):
            ax.plot([1000 / ms], [1.0], marker, label=name)
        ax.set(xscale="log", xlabel="queries per second", ylabel="recall@10", title=f"{c['n']:,} items")
        ax.axhline(0.95, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_only(n: int, queries_n: int) -> str:
    """The one careful run at a size too big to repeat: the product's pick and every option on the test queries,
    and the graph's curve, in this process (no Annoy grid, no serving children)."""
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((CLASSES, DIM), np.float32)
    gallery, g_labels = mixture(n, centres, SPREAD[n], rng)
    queries, _ = mixture(queries_n, centres, SPREAD[n], rng)
    probes, _ = mixture(IndexConfig().recall_sample, centres, SPREAD[n], rng)
    truth, _ = topk(queries, gallery, K)
    load = os.getloadavg()
    pick = product_pick(gallery, probes, queries, truth)
    head = (f"### kNN at {n:,}: the product's pick ({queries_n} held-out queries; load average {load[0]:.1f} "
            f"before the build, {os.getloadavg()[0]:.1f} after)")  # fmt: skip
    lines = [head, "", pick_lines(n, pick), goal_line(n, pick)]
    if pick["index"].graph is not None:
        with tempfile.TemporaryDirectory() as folder:
            files = pick["index"].graph.save_into(Path(folder))
            mb = sum((Path(folder) / f).stat().st_size for f in files) / 2**20
        lines += [
            "",
            f"The graph's file: {mb:,.0f} MB ({len(files)} file(s)); the float32 gallery "
            f"{gallery.nbytes / 2**20:,.0f} MB.",
        ]
        curve = graph_curve(pick["index"].graph, gallery, queries, truth, g_labels, vote(g_labels[truth]))
        lines += ["", "The product's graph at other search depths (recall@10 at ms/query): "
                  + ", ".join(f"ef {r['ef']}: {r['recall']:.3f} at {r['ms']:.3f}" for r in curve)]  # fmt: skip
    return "\n".join(lines)


def run(quick: bool, out: Path, only: list[int] | None = None) -> str:
    """The section for BENCHMARKS.md; the figure goes to ``out``/docs/knn_recall_qps.png."""
    sizes = QUICK if quick else FULL
    sizes = {n: v for n, v in sizes.items() if not only or n in only}
    parts, curves = [], []
    with tempfile.TemporaryDirectory() as folder:
        for n, (queries_n, n_trees_grid, search_ks) in sizes.items():
            md, c = size_section(n, queries_n, n_trees_grid, search_ks, Path(folder), serving=n == max(sizes))
            parts.append(md)
            curves.append(c)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    figure(curves, out / "docs/knn_recall_qps.png")
    head = (
        f"Gaussian mixture on the unit sphere, d={DIM}, {CLASSES:,} classes, noise per size {SPREAD}; queries from the "
        "mixture, never gallery items. k=10. Times are the best of 2–3 passes on a shared 2-core machine.\n\n"
        "![recall against queries per second](docs/knn_recall_qps.png)"
    )
    return "\n\n".join([head, *parts])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10k items only, a small grid (CI)")
    ap.add_argument("--out", default=".", help="folder for the figure")
    ap.add_argument("--sizes", type=int, nargs="*", help="only these gallery sizes (of 10000 100000 1000000)")
    ap.add_argument("--pick-only", action="store_true", help="only the product's pick at --sizes (the 1M run)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # the child process of serving_memory: a saved state's folder
    args = ap.parse_args(argv)
    if args.serve:
        print(json.dumps(serve(Path(args.serve))))
        return
    if args.pick_only:
        print("\n\n".join(pick_only(n, 300) for n in args.sizes or [1_000_000]), flush=True)
        return
    print(run(args.quick, Path(args.out), args.sizes))


if __name__ == "__main__":
    main()
