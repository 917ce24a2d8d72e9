"""embedder/search/shards.py: a gallery past ``shard_items`` rows gets one real Annoy index per range of rows, queried
together. The merged answer is checked against brute force, the bundle records and checks every shard file, and
``add`` rebuilds only the last, partial shard."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedder.answers.predict import Predictor
from embedder.config import IndexConfig
from embedder.errors import EmbedderError
from embedder.insights.export import bundle_zip
from embedder.runs.run import load_run
from embedder.search.index import build_index
from embedder.search.knn import topk
from embedder.search.shards import ShardedAnnoy, build_shards, merge_nearest, shard_ranges
from embedder.verbs.add import add_images
from tests.helpers import make_shapes_folder, rewrite_checksums, synthetic_run, unit


def _overlapping(n, n_queries, dim=16, classes=50, seed=4):
    """Overlapping clusters (embeddings of hard data), and held-out queries from the same mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    gallery = unit(centres[rng.integers(0, classes, n)] + rng.normal(size=(n, dim)))
    queries = unit(centres[rng.integers(0, classes, n_queries)] + rng.normal(size=(n_queries, dim)))
    return gallery, queries


def _recall(got, truth) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(got, truth)]))


def test_merge_nearest__hand_placed_candidates_come_back_nearest_first_ties_by_row():
    ids = np.array([[7, 3, 105, 101, 250, 201]])  # (1, 6): 2 candidates from each of 3 shards
    dists = np.array([[0.5, 0.2, 0.2, 0.9, 0.1, 0.7]], dtype=np.float32)
    got, got_d = merge_nearest(ids, dists, 4)
    assert got.tolist() == [[250, 3, 105, 7]] and got_d[0].tolist() == pytest.approx([0.1, 0.2, 0.2, 0.5])
    assert merge_nearest(ids, dists, 10)[0].tolist() == [[250, 3, 105, 7, 201, 101]]  # k past the candidates
    # a tie at the k-th place goes to the lower row too, not to whichever the partition kept
    tied = np.array([[0.1, 0.2, 0.2, 0.2, 0.2, 0.2]], dtype=np.float32)
    assert merge_nearest(np.array([[250, 105, 7, 201, 3, 101]]), tied, 3)[0].tolist() == [[250, 3, 7]]


def test_shard_ranges__contiguous_and_the_last_one_shorter():
    assert shard_ranges(250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert shard_ranges(200, 100) == [(0, 100), (100, 200)]


def test_sharded_annoy__each_shard_returns_n_and_the_merge_returns_n_across_shards():
    gallery, queries = _overlapping(300, 3, dim=8)
    sharded = build_shards(gallery, IndexConfig(n_trees=5, shard_items=100))
    assert sharded.sizes.tolist() == [100, 100, 100]
    for part in sharded.parts:  # a broken annoy build returns one item here
        assert len(part.get_nns_by_vector(queries[0].tolist(), 10)) == 10
    got = sharded.get_nns_by_vector(queries[0].tolist(), 150, search_k=10**6)
    assert len(got) == 150 and len(set(got)) == 150 and max(got) >= 200  # more than a shard holds, from all three


def test_sharded_index__answers_with_gallery_rows_sorted_by_distance_as_brute_force_does():
    gallery, queries = _overlapping(600, 20, dim=8)
    index = build_index(gallery, IndexConfig(n_trees=5, method="annoy", shard_items=200))
    assert isinstance(index.annoy, ShardedAnnoy) and len(index.stats()["shards"]) == 3
    index.search_k = (
        200 * 5 * 10
    )  # far past every node of each shard: each shard's answer is exact, so must be the merge
    got, got_d = index.query(queries, 10)
    want, want_d = topk(queries, gallery, 10)
    assert got.tolist() == want.tolist()
    np.testing.assert_allclose(got_d, want_d, atol=1e-4)
    assert np.all(np.diff(got_d, axis=1) >= 0)
    idx, dist = index.neighbors_of(450, 5)  # a row of the last shard
    want, want_d = topk(gallery[450:451], gallery, 5, exclude=np.array([450]))
    assert idx.tolist() == want[0].tolist() and 450 not in idx.tolist()


def test_sharded_index__recall_at_10_is_the_single_indexs_on_overlapping_data():
    gallery, held_out = _overlapping(20_000, 500)
    probes, queries = held_out[:200], held_out[200:]  # queries are neither gallery items nor the tuning probes
    truth, _ = topk(queries, gallery, 10)
    recall = {}
    for shard_items in (1_000_000, 5_000):
        config = IndexConfig(n_trees=10, method="annoy", target_recall=0.95, shard_items=shard_items)
        index = build_index(gallery, config, probes=probes)
        recall[shard_items] = _recall(index.query(queries, 10)[0], truth)
    assert recall[5_000] >= 0.93 and recall[5_000] >= recall[1_000_000] - 0.03, recall


def test_sharded_build__on_disk_gives_the_same_files_and_cleans_up(tmp_path):
    gallery, queries = _overlapping(300, 5, dim=8)
    in_memory = build_index(gallery, IndexConfig(n_trees=3, method="annoy", shard_items=100))
    on_disk = build_index(gallery, IndexConfig(n_trees=3, method="annoy", shard_items=100, on_disk_items=200))
    built_in = [f for f in on_disk.annoy.files if f is not None]
    assert len(built_in) == 3 and all(f.is_file() for f in built_in)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    names = in_memory.save_into(tmp_path / "a")
    assert on_disk.save_into(tmp_path / "b") == names == ["index-000.ann", "index-001.ann", "index-002.ann"]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert on_disk.query(queries, 5)[0].tolist() == in_memory.query(queries, 5)[0].tolist()
    del on_disk
    import gc

    gc.collect()
    assert not any(f.exists() for f in built_in)  # the temporary builds go with their index


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    """A run bundle of 3,000 gallery rows in shards of 1,000, answered by Annoy."""
    out = tmp_path_factory.mktemp("shards") / "sharded"
    return synthetic_run(out, n=3000, shard_items=1000, method="annoy", target_recall=0.99, n_trees=10)


def test_bundle__records_each_shard_and_the_loaded_run_answers_as_the_built_one(sharded_run):
    config = json.loads((sharded_run / "config.json").read_text())
    shards = config["index"]["shards"]
    assert [(s["file"], s["start"], s["stop"]) for s in shards] == [
        ("index-000.ann", 0, 1000), ("index-001.ann", 1000, 2000), ("index-002.ann", 2000, 3000)
    ]  # fmt: skip
    checksummed = json.loads((sharded_run / "checksums.json").read_text())["sha256"]
    assert {"model.pt", "gallery.npz", *(s["file"] for s in shards)} <= set(checksummed)
    assert not (sharded_run / "index.ann").exists()
    run = load_run(sharded_run)
    queries = unit(run.gallery_embeddings[:50] + 0.3 * np.random.default_rng(0).normal(size=(50, 16)))
    built = build_index(run.gallery_embeddings, IndexConfig(n_trees=10, shard_items=1000, method="annoy"))
    built.search_k = run.index().search_k
    assert run.index().query(queries, 10)[0].tolist() == built.query(queries, 10)[0].tolist()
    assert run.index().stats() == config["index"]
    assert "in 3 shards" in run.index().describe()
    buf = io.BytesIO()
    assert [n for n in bundle_zip(sharded_run, buf) if n.endswith(".ann")] == [s["file"] for s in shards]  # exported


def test_bundle__serving_maps_every_shard_file_rather_than_reading_it(sharded_run):
    run = load_run(sharded_run)
    with open("/proc/self/maps") as f:
        mapped = f.read()
    assert all(str(sharded_run / f"index-00{i}.ann") in mapped for i in range(3))
    assert run.index().query(run.gallery_embeddings[:2], 3)[0][:, 0].tolist() == [0, 1]


def _one_line(info, *parts):
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert all(p in message for p in parts), message


def test_bundle__a_damaged_missing_or_swapped_shard_is_refused_in_one_line(sharded_run, tmp_path):
    run_dir = Path(shutil.copytree(sharded_run, tmp_path / "run"))
    good = (run_dir / "index-001.ann").read_bytes()
    (run_dir / "index-001.ann").write_bytes(good[:-8] + bytes(8))
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index-001.ann", "checksum")
    (run_dir / "index-001.ann").unlink()
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "missing index-001.ann")
    (run_dir / "index-001.ann").write_bytes((run_dir / "index-000.ann").read_bytes())  # same size, other rows
    rewrite_checksums(run_dir)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index-001.ann", "is not gallery image")
    (run_dir / "index-001.ann").write_bytes(good)
    rewrite_checksums(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["index"]["shards"][1]["file"] = "../index-001.ann"
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "'../index-001.ann' is not an index-<n>.ann file name")


def test_predict__a_sharded_run_labels_queries_as_the_same_run_with_one_index(sharded_run, tmp_path):
    single = synthetic_run(tmp_path / "single", n=3000, method="annoy", target_recall=0.99, n_trees=10)
    assert (single / "index.ann").is_file() and "shards" not in json.loads((single / "config.json").read_text())
    one, many = Predictor(load_run(single)), Predictor(load_run(sharded_run))
    assert np.array_equal(one.run.gallery_embeddings, many.run.gallery_embeddings)
    queries = unit(one.run.gallery_embeddings[:300] + 0.5 * np.random.default_rng(1).normal(size=(300, 16)))
    names = [f"q{i}" for i in range(300)]
    tuned = [[p.label for p in predictor.predict_embeddings(queries, names)] for predictor in (one, many)]
    assert np.mean(np.equal(*tuned)) >= 0.9  # both approximate at recall@10 0.99: ambiguous queries may differ
    for predictor in (one, many):
        predictor.index.search_k = 3000 * 10 * 10  # past every node: both answer exactly
    labels = [p.label for p in one.predict_embeddings(queries, names)]
    assert [p.label for p in many.predict_embeddings(queries, names)] == labels
    assert len(set(labels)) > 10  # overlapping classes: the labels are not all one answer


def test_add__a_sharded_run_rebuilds_only_its_last_shard_and_adds_new_ones(tmp_path):
    run_dir = synthetic_run(tmp_path / "run", n=250, n_classes=3, shard_items=100, n_trees=5)
    before = {n: (run_dir / n).read_bytes() for n in ("index-000.ann", "index-001.ann", "index-002.ann")}
    new = make_shapes_folder(tmp_path / "new", classes=("circle", "square", "triangle"), per_class=20, size=32)
    built = []
    add_images(run_dir, new, progress=lambda p: built.append((p.done, p.total)) if p.stage == "index" else None)
    assert [b for b in built if b[1]] == [(1, 2), (2, 2)]  # rows 200..299 and 300..309: two of four shards
    run = load_run(run_dir)
    assert [(s["start"], s["stop"]) for s in run.info["index"]["shards"]] == [(0, 100), (100, 200), (200, 300),
                                                                               (300, 310)]  # fmt: skip
    assert all((run_dir / n).read_bytes() == b for n, b in before.items() if n != "index-002.ann")
    fresh = build_index(run.gallery_embeddings, IndexConfig(n_trees=5, shard_items=100))
    (tmp_path / "fresh").mkdir()
    for name in fresh.save_into(tmp_path / "fresh"):  # what building the grown gallery from scratch writes
        assert (tmp_path / "fresh" / name).read_bytes() == (run_dir / name).read_bytes(), name
    added = run.gallery_embeddings[250:]
    assert run.index().query(added, 1)[0][:, 0].tolist() == list(range(250, 310))


@pytest.mark.slow
def test_cli__train_with_shard_items_writes_the_run_the_single_index_path_writes_in_shards(tmp_path, capsys):
    from embedder.cli.main import main

    shapes = make_shapes_folder(tmp_path / "shapes", per_class=16)
    args = ["train", "--data", str(shapes), "--epochs", "1", "--dim", "16", "--classes-per-batch", "3"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "many"), "--shard-items", "10"]) == 0
    one, many = load_run(tmp_path / "one"), load_run(tmp_path / "many")
    n = len(one.gallery_paths)
    assert sorted(p.name for p in (tmp_path / "many").glob("index*.ann")) == [
        f"index-{i:03d}.ann" for i in range(-(-n // 10))
    ]
    assert one.gallery_paths == many.gallery_paths
    np.testing.assert_array_equal(one.gallery_embeddings, many.gallery_embeddings)
    assert one.metrics["test"] == many.metrics["test"]  # the same held-out evaluation
    capsys.readouterr()
    queries = [str(p) for p in load_run(tmp_path / "one").queries("test")[0][:12]]
    answers = []
    for run in ("one", "many"):
        assert main(["predict", str(tmp_path / run), *queries, "--json"]) == 0
        answers.append([p["label"] for p in json.loads(capsys.readouterr().out)])
    assert answers[0] == answers[1]
