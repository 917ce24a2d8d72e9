"""embedder/search/graph.py and the graph in the index choice: a real Voyager HNSW graph, checked against brute force;
what it promises (the same neighbours for the same query, exact distances ties by row, byte-identical one-thread
builds), saving into a run bundle with its checksum, growing with ``previous``, shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedder.answers.predict import Predictor
from embedder.config import IndexConfig
from embedder.errors import EmbedderError
from embedder.runs.run import load_run
from embedder.search.graph import Graph, build_graph, open_graph, rerank
from embedder.search.index import _choose, build_index, open_index
from embedder.search.knn import topk
from tests.helpers import rewrite_checksums, synthetic_run, unit


def _clusters(n, n_queries, dim=16, classes=40, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    gallery = unit(centres[rng.integers(0, classes, n)] + noise * rng.normal(size=(n, dim)))
    queries = unit(centres[rng.integers(0, classes, n_queries)] + noise * rng.normal(size=(n_queries, dim)))
    return gallery, queries


def _recall(got, want) -> float:
    return float(np.mean([len(set(a) & set(b)) / want.shape[1] for a, b in zip(got, want)]))


GRAPH = dict(method="graph", target_recall=0.98, n_trees=2)


def test_graph__finds_the_exact_neighbours_with_exact_distances_nearest_first():
    gallery, queries = _clusters(3000, 50)
    index = build_index(gallery, IndexConfig(**GRAPH), probes=queries[:25])
    assert index.method == "graph" and index.recall_at_10 >= 0.98 and index.ef >= 16
    got, got_d = index.query(queries, 10)
    want, _ = topk(queries, gallery, 10)
    assert _recall(got, want) >= 0.95
    exact_d = np.linalg.norm(gallery[got] - queries[:, None], axis=2)  # (Q, 10): each returned row's true distance
    np.testing.assert_allclose(got_d, exact_d, atol=1e-5)
    assert np.all(np.diff(got_d, axis=1) >= 0)
    assert "HNSW graph for 3,000 images" in index.describe()


def test_rerank__hand_placed_candidates_by_distance_then_row():
    gallery = np.array([[0, 0], [3, 0], [0, 1], [1, 0], [0, 2]], dtype=np.float32)
    rows, d = rerank(np.zeros((1, 2), np.float32), gallery, np.array([[4, 3, 1, 2, 0]]))
    assert rows.tolist() == [[0, 2, 3, 4, 1]] and d[0].tolist() == pytest.approx([0, 1, 1, 2, 3])


def test_graph__the_same_query_gets_the_same_neighbours_every_time_and_after_loading(tmp_path):
    gallery, queries = _clusters(2000, 30)
    index = build_index(gallery, IndexConfig(**GRAPH))
    first = index.query(queries, 10)
    for _ in range(3):
        again = index.query(queries, 10)
        assert again[0].tolist() == first[0].tolist() and np.array_equal(again[1], first[1])
    one_by_one = np.concatenate([index.query(q[None], 10)[0] for q in queries])  # one thread vs the batch's many
    assert one_by_one.tolist() == first[0].tolist()
    names = index.save_into(tmp_path)
    assert names == ["index.ann", "graph.voy"]
    loaded = open_index(tmp_path, gallery, json.loads(json.dumps(index.stats())))
    assert loaded.method == "graph" and loaded.ef == index.ef
    assert loaded.query(queries, 10)[0].tolist() == first[0].tolist()


def test_graph__unit_vectors_are_kept_in_8_bits_a_smaller_file_with_the_same_neighbours_and_exact_distances(tmp_path):
    import voyager

    gallery, queries = _clusters(3000, 100, dim=64, noise=0.9)
    want, _ = topk(queries, gallery, 10)
    eight = build_graph(gallery, IndexConfig(graph_threads=1))
    full = build_graph(gallery * 2, IndexConfig(graph_threads=1))  # not unit vectors: float32, the same geometry
    assert eight.parts[0].storage_data_type == voyager.StorageDataType.Float8
    assert full.parts[0].storage_data_type == voyager.StorageDataType.Float32
    (tmp_path / "8").mkdir(), (tmp_path / "32").mkdir()  # 64-d: the vectors shrink 4x, the links do not
    eight.save_into(tmp_path / "8"), full.save_into(tmp_path / "32")
    assert (tmp_path / "8/graph.voy").stat().st_size < 0.7 * (tmp_path / "32/graph.voy").stat().st_size
    rows, d = eight.query(queries, gallery, 10, 64)
    assert _recall(rows, want) >= _recall(full.query(queries, gallery * 2, 10, 64)[0], want) - 0.01
    assert _recall(rows, want) >= 0.95
    np.testing.assert_allclose(d, np.linalg.norm(gallery[rows] - queries[:, None], axis=2), atol=1e-5)
    loaded = open_graph(tmp_path / "8", gallery, [{"file": "graph.voy", "start": 0, "stop": 3000}])
    assert loaded.query(queries, gallery, 10, 64)[0].tolist() == rows.tolist()


def test_open_graph__a_float32_graph_of_unit_vectors_from_before_loads_and_answers(tmp_path):
    import voyager

    gallery, queries = _clusters(1500, 20)
    old = voyager.Index(voyager.Space.Euclidean, 16, M=32, ef_construction=200)  # what runs wrote before 8 bits
    old.add_items(gallery, num_threads=1)
    old.save(str(tmp_path / "graph.voy"))
    graph = open_graph(tmp_path, gallery, [{"file": "graph.voy", "start": 0, "stop": 1500}])
    rows, _ = graph.query(queries, gallery, 10, 64)
    assert rows.shape == (20, 10) and _recall(rows, topk(queries, gallery, 10)[0]) >= 0.95


def test_graph__one_thread_builds_with_one_seed_are_byte_identical(tmp_path):
    gallery, _ = _clusters(1500, 1)
    config = IndexConfig(seed=3, graph_threads=1)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        build_graph(gallery, config).save_into(tmp_path / name)
    assert (tmp_path / "a/graph.voy").read_bytes() == (tmp_path / "b/graph.voy").read_bytes()


def test_graph__grows_by_the_new_rows_and_leaves_the_previous_graph_as_it_was():
    gallery, _ = _clusters(2600, 1)
    before = build_graph(gallery[:2000], IndexConfig())
    inserted = []
    grown = build_graph(gallery, IndexConfig(), previous=before, progress=lambda d, t: inserted.append((d, t)))
    assert inserted[-1] == (600, 600)  # only the new rows were inserted
    assert before.size == 2000 and grown.size == 2600
    rows, d = grown.query(gallery[2000:], gallery, 1, 64)
    assert rows[:, 0].tolist() == list(range(2000, 2600)) and np.allclose(d, 0, atol=1e-3)
    other = build_graph(
        gallery[::-1].copy(), IndexConfig(), previous=before, progress=lambda d, t: inserted.append((d, t))
    )
    assert other.size == 2600 and inserted[-1] == (2600, 2600)  # other rows: nothing to keep, all inserted anew


def test_graph__a_large_gallery_gets_a_graph_per_shard_answering_with_gallery_rows(tmp_path):
    gallery, queries = _clusters(2500, 40)
    index = build_index(gallery, IndexConfig(shard_items=1000, **GRAPH), probes=queries)
    assert isinstance(index.graph, Graph) and index.graph.sizes.tolist() == [1000, 1000, 500]
    assert [r["file"] for r in index.stats()["graph"]] == ["graph-000.voy", "graph-001.voy", "graph-002.voy"]
    got, _ = index.query(queries, 10)
    want, _ = topk(queries, gallery, 10)
    assert _recall(got, want) >= 0.95 and got.max() >= 2000
    idx, dist = index.neighbours_of(2100, 5)
    want, want_d = topk(gallery[2100:2101], gallery, 5, exclude=np.array([2100]))
    assert idx.tolist() == want[0].tolist() and 2100 not in idx.tolist()
    index.save_into(tmp_path)
    loaded = open_graph(tmp_path, gallery, index.stats()["graph"])
    assert loaded.query(queries, gallery, 10, index.ef)[0].tolist() == got.tolist()


def test_open_graph__a_graph_of_other_vectors_or_a_broken_file_is_refused_in_one_line(tmp_path):
    gallery, _ = _clusters(1200, 1)
    build_graph(gallery, IndexConfig()).save_into(tmp_path)
    files = [{"file": "graph.voy", "start": 0, "stop": 1200}]
    with pytest.raises(EmbedderError, match="graph.voy: its item .* is not gallery image"):
        open_graph(tmp_path, _clusters(1200, 1, seed=9)[0], files)
    with pytest.raises(EmbedderError, match="holds 1200 items of 16-d, the gallery 1199"):
        open_graph(tmp_path, gallery[:1199], [{**files[0], "stop": 1199}])
    (tmp_path / "graph.voy").write_bytes((tmp_path / "graph.voy").read_bytes()[:5000])
    with pytest.raises(EmbedderError) as info:
        open_graph(tmp_path, gallery, files)
    assert "graph.voy: not a Voyager graph" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EmbedderError, match="'../graph.voy' is missing"):
        open_graph(tmp_path, gallery, [{**files[0], "file": "../graph.voy"}])


def test_choose__the_fastest_index_at_its_recall_target_and_min_speedup_else_exact():
    config = IndexConfig(target_recall=0.95, min_speedup=1.5)
    both = dict(exact_ms=10.0, annoy_ms=2.0, annoy_recall_at_10=0.96, graph_ms=0.5, graph_recall_at_10=0.97)
    assert _choose(config, both) == "graph"
    assert _choose(config, {**both, "graph_recall_at_10": 0.9}) == "annoy"  # the graph missed its target
    assert _choose(config, {**both, "graph_ms": 8.0, "annoy_ms": 9.0}) == "exact"  # neither 1.5x faster
    assert _choose(config, {k: v for k, v in both.items() if "graph" not in k}) == "annoy"  # no graph built
    assert _choose(IndexConfig(method="annoy"), both) == "annoy"  # forced


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory) -> Path:
    """A run bundle of 3,000 gallery rows answered by its graph."""
    return synthetic_run(tmp_path_factory.mktemp("graph") / "run", n=3000, **GRAPH)


def test_bundle__the_graph_file_has_its_checksum_and_a_damaged_one_is_refused(graph_run, tmp_path):
    config = json.loads((graph_run / "config.json").read_text())
    assert config["index"]["method"] == "graph" and config["index"]["graph"] == [
        {"file": "graph.voy", "start": 0, "stop": 3000}
    ]
    checksummed = json.loads((graph_run / "checksums.json").read_text())["sha256"]
    assert {"config.json", "model.pt", "gallery.npz", "index.ann", "graph.voy"} <= set(checksummed)
    run = load_run(graph_run)
    queries = unit(run.gallery_embeddings[:40] + 0.3 * np.random.default_rng(0).normal(size=(40, 16)))
    labels = [p.label for p in Predictor(run).predict_embeddings(queries, [f"q{i}" for i in range(40)])]
    assert len(labels) == 40 and run.index().method == "graph"
    run_dir = Path(shutil.copytree(graph_run, tmp_path / "run"))
    good = (run_dir / "graph.voy").read_bytes()
    middle = len(good) // 2
    (run_dir / "graph.voy").write_bytes(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :])
    with pytest.raises(EmbedderError, match="graph.voy.*checksum"):
        load_run(run_dir)
    (run_dir / "graph.voy").unlink()
    with pytest.raises(EmbedderError, match="missing graph.voy"):
        load_run(run_dir)
    (run_dir / "graph.voy").write_bytes(good)
    config["index"]["graph"][0]["file"] = "../graph.voy"
    (run_dir / "config.json").write_text(json.dumps(config))
    rewrite_checksums(run_dir)
    with pytest.raises(EmbedderError, match="'../graph.voy' is not a graph file name"):
        load_run(run_dir)


def test_build_index__a_forced_graph_over_one_image_answers_exactly():
    index = build_index(unit([[1.0, 2.0, 3.0]]), IndexConfig(method="graph"))
    assert index.method == "exact" and index.query(unit([[1.0, 2.0, 2.0]]), 3)[0].tolist() == [[0]]
