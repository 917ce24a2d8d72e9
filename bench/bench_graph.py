"""Three HNSW libraries on the same overlapping vectors: Voyager, hnswlib and faiss (IndexHNSWFlat).

For each library a child process builds the graph over the gallery (build time, peak memory over the gallery it was
handed), saves it (file size), and a second, fresh child loads only that file (load time, serving memory: RSS over
the bare interpreter) and answers held-out queries one at a time at a sweep of search depths (``ef``): recall@10
against exact search and ms per query. Exact float32 search (the product's ``topk``, one query) is timed in the
serving child too, so every speed is a ratio measured in the same process.

The data are ``bench_knn``'s mixture (d=128, 1,000 overlapping classes, exact 1-NN accuracy about 0.95), generated
once per size and cached as .npy files outside the repository (``--cache``): a 1M gallery takes a minute to draw.

    python -m bench.bench_graph --sizes 100000 1000000 [--cache DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import mixture, ms_per_call, table

DIM, CLASSES, K = 128, 1000, 10
SPREAD = {10_000: 1.4, 100_000: 1.57, 1_000_000: 1.68}
LIBRARIES = ("voyager", "hnswlib", "faiss")
M, EF_CONSTRUCTION = 32, 200  # the same graph settings for every library (the product's: search/graph.py)
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
QUERIES = 1000


def vm_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1]) / 1024


def data(n: int, cache: Path) -> dict[str, Path]:
    """The gallery, queries, their labels and exact top-10 for size ``n``, drawn once and kept in ``cache``."""
    from embedder.search.knn import topk

    folder = cache / f"mixture-{n}"
    files = {name: folder / f"{name}.npy" for name in ("gallery", "queries", "probes", "truth")}
    if all(f.exists() for f in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((CLASSES, DIM), np.float32)
    gallery, _ = mixture(n, centres, SPREAD[n], rng)
    queries, _ = mixture(QUERIES, centres, SPREAD[n], rng)
    probes, _ = mixture(200, centres, SPREAD[n], rng)
    truth, _ = topk(queries, gallery, K)
    for name, a in zip(files, (gallery, queries, probes, truth)):
        np.save(files[name], a)
    return files


def build(library: str, gallery: np.ndarray, path: Path, threads: int):
    """Build ``library``'s graph over the (N, D) unit vectors (L2 space) and save it to ``path``."""
    n = len(gallery)
    if library == "voyager":
        import voyager

        index = voyager.Index(voyager.Space.Euclidean, DIM, M=M, ef_construction=EF_CONSTRUCTION, random_seed=1,
                              max_elements=n)  # fmt: skip
        index.add_items(gallery, num_threads=threads)
        index.save(str(path))
    elif library == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="l2", dim=DIM)
        index.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=1)
        index.add_items(gallery, num_threads=threads)
        index.save_index(str(path))
    else:
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(DIM, M)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(gallery)
        faiss.write_index(index, str(path))


def searcher(library: str, path: Path):
    """Load ``path`` and return (set_ef(ef), search(q (D,)) -> ids)."""
    if library == "voyager":
        import voyager

        index = voyager.Index.load(str(path))
        state = {"ef": 10}
        return (lambda ef: state.update(ef=ef)), (lambda q: index.query(q, K, query_ef=state["ef"])[0])
    if library == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="l2", dim=DIM)
        index.load_index(str(path))
        index.set_num_threads(1)
        return index.set_ef, (lambda q: index.knn_query(q, K, num_threads=1)[0][0])
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)

    def set_ef(ef):
        index.hnsw.efSearch = ef

    return set_ef, (lambda q: index.search(q[None], K)[1][0])


def child_build(library: str, files: dict, path: Path, threads: int) -> dict:
    gallery = np.load(files["gallery"])
    base = vm_mb("VmRSS")
    t0 = time.perf_counter()
    build(library, gallery, path, threads)
    took = time.perf_counter() - t0
    return dict(build_s=took, build_peak_mb=vm_mb("VmHWM") - base, file_mb=path.stat().st_size / 2**20)


def child_serve(library: str, files: dict, path: Path) -> dict:
    """Serving: the graph file loaded alone (RSS over the interpreter), then the exact baseline in this process."""
    from embedder.search.knn import squared_norms, topk

    queries, truth = np.load(files["queries"]), np.load(files["truth"])
    base = vm_mb("VmRSS")
    t0 = time.perf_counter()
    set_ef, search = searcher(library, path)
    load_s, loaded = time.perf_counter() - t0, vm_mb("VmRSS") - base
    curve = []
    for ef in EFS:
        set_ef(ef)
        got = np.array([search(q) for q in queries])
        hits = np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(got, truth)])
        it = iter(np.tile(queries, (4, 1)))
        curve.append(dict(ef=ef, recall=float(hits), ms=ms_per_call(lambda i=it: search(next(i)), 200, 3)))
    serving = vm_mb("VmRSS") - base
    gallery = np.load(files["gallery"])
    norms = squared_norms(gallery)
    it = iter(np.tile(queries, (4, 1)))
    exact_ms = ms_per_call(lambda: topk(next(it)[None], gallery, K, gallery_norms=norms), 30, 3)
    return dict(load_ms=1000 * load_s, loaded_mb=loaded, serving_mb=serving, curve=curve, exact_ms=exact_ms)


def run_child(*args: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "bench.bench_graph", *args], cwd=root, capture_output=True,
                          text=True, timeout=7200)  # fmt: skip
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(n: int, cache: Path, threads: int) -> dict[str, dict]:
    """Every library at size ``n``: build and serve, each in its own fresh process."""
    data(n, cache)  # drawn once, before the children read it
    found = {}
    with tempfile.TemporaryDirectory(dir=cache) as folder:
        for library in LIBRARIES:
            path = Path(folder) / f"{library}.index"
            load = os.getloadavg()[0]
            built = run_child("--child", "build", library, str(cache), str(n), str(path), str(threads))
            served = run_child("--child", "serve", library, str(cache), str(n), str(path), "1")
            found[library] = {**built, **served, "load_before": load, "load_after": os.getloadavg()[0]}
            print(json.dumps({"n": n, "library": library, **found[library]}), file=sys.stderr, flush=True)
    return found


def section(n: int, found: dict[str, dict], threads: int) -> str:
    """Markdown: per library, the build and the recall/ms curve, as ratios to exact search in the serving process."""
    rows = []
    for library, r in found.items():
        at95 = [c for c in r["curve"] if c["recall"] >= 0.95]
        best = min(at95, key=lambda c: c["ms"], default=None)
        speed = f"{r['exact_ms'] / best['ms']:.0f}x (ef {best['ef']}, {best['ms']:.3f} ms)" if best else "never"
        rows.append([library, f"{r['build_s']:.0f}", f"{r['build_peak_mb']:.0f}", f"{r['file_mb']:.0f}",
                     f"{r['load_ms']:.0f}", f"{r['serving_mb']:.0f}", f"{r['exact_ms']:.2f}", speed,
                     " ".join(f"{c['recall']:.3f}@{c['ms']:.3f}" for c in r["curve"]),
                     f"{r['load_before']:.1f}/{r['load_after']:.1f}"])  # fmt: skip
    efs = "/".join(map(str, EFS))
    header = ["library", "build s", "build peak MB", "file MB", "load ms", "serving MB", "exact ms/query",
              "speed vs exact at recall@10 >= 0.95", f"recall@ms at ef {efs}", "load avg"]  # fmt: skip
    return (
        f"#### HNSW libraries at {n:,} items (M={M}, ef_construction={EF_CONSTRUCTION}, built with {threads} "
        f"threads; {QUERIES} held-out queries one at a time, one thread)\n\n" + table(header, rows)
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--cache", default=str(Path.home() / ".cache/embedder-bench"), help="generated data, kept")
    ap.add_argument("--threads", type=int, default=2, help="build threads")
    ap.add_argument("--out", help="write the results as JSON here too")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)  # what, library, cache, n, path, threads
    args = ap.parse_args(argv)
    if args.child:
        what, library, cache, n, path, threads = args.child
        files = data(int(n), Path(cache))
        got = child_build(library, files, Path(path), int(threads)) if what == "build" else (
            child_serve(library, files, Path(path)))  # fmt: skip
        print(json.dumps(got))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = {n: compare(n, cache, args.threads) for n in args.sizes}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print("\n\n".join(section(n, r, args.threads) for n, r in results.items()))


if __name__ == "__main__":
    main()
