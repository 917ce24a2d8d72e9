"""embedder/network/ray_embed.py: a pool of Ray actors embeds image files into shards that read back, in the input
order, as exactly what the single-process ``embed_images`` returns.
The Ray tests share one local instance with 2 CPUs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from embedder.cli.args import build_parser
from embedder.config import ModelConfig
from embedder.errors import EmbedderError
from embedder.images.transforms import eval_transform
from embedder.network.embed import embed_images
from embedder.network.model import EmbeddingNet
from embedder.network.ray_embed import SHARD_MARKER, Pool, embed_with_ray, import_ray, plan_pool, read_shards
from embedder.runs.run import load_run
from tests.helpers import ROOT, cfg, make_shapes_folder


@pytest.fixture(scope="module")
def local_ray():
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _network() -> EmbeddingNet:
    """The convnet with mirror averaging and a centre crop: every step of the eval preprocessing in play."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="convnet", dim=16, image_size=32, resize="crop", flip_tta=True)
    return EmbeddingNet(config).eval()


@pytest.mark.slow
def test_embed_with_ray__two_actors_give_the_single_process_embeddings_in_input_order(local_ray, tmp_path):
    folder = make_shapes_folder(tmp_path / "shapes", per_class=40, size=48)
    paths = sorted(folder.rglob("*.png"))
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]  # not the order on disk
    net = _network()
    want = embed_images(net, paths, eval_transform(net.config), flip_tta=True)  # (120, 16)
    reports = []
    out = embed_with_ray(
        net.config,
        net.state_dict(),
        paths,
        tmp_path / "shards",
        workers=2,
        batch_size=16,
        progress=lambda done, total: reports.append((done, total)),
    )
    shards = list(out.glob("part-*.npz"))
    assert len(shards) >= 2  # the work went out in blocks, one shard each, to a pool of at most 2 actors
    actors = set()
    for shard in shards:
        with np.load(shard, allow_pickle=False) as f:
            actors.update(f["actors"].tolist())
    assert 1 <= len(actors) <= 2 and all(actors)  # (how many took part depends on how fast each started)
    got = read_shards(out)
    assert got.shape == want.shape == (120, 16)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert reports[-1] == (120, 120)


@pytest.mark.slow
def test_embed_with_ray__an_unreadable_image_is_one_line_naming_it(local_ray, tmp_path):
    folder = make_shapes_folder(tmp_path / "shapes", per_class=4)
    paths = sorted(folder.rglob("*.png"))
    paths[5].write_bytes(paths[5].read_bytes()[:60])  # cut short
    net = _network()
    with pytest.raises(EmbedderError, match=paths[5].name) as exc:
        embed_with_ray(net.config, net.state_dict(), paths, tmp_path / "shards", workers=2)
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_train_with_ray__writes_the_run_bundle_of_the_single_process_path(local_ray, tmp_path):
    """train --ray writes the run the single process writes; the gallery of its kept network comes block by block
    from the actors (``embed_gallery``: the first answer's pixels are embedded in the process, which is
    cheaper than starting actors for them; the actors embed a trained network's gallery)."""
    from embedder.progress import Stage, silent
    from embedder.training.plan import plan
    from embedder.training.train import Fitted
    from embedder.verbs.pipeline import embed_gallery, train

    shapes = make_shapes_folder(tmp_path / "shapes")
    train(cfg(shapes, tmp_path / "plain"))
    train(cfg(shapes, tmp_path / "ray"), ray="")
    plain, ray = load_run(tmp_path / "plain"), load_run(tmp_path / "ray")
    assert ray.gallery_paths == plain.gallery_paths
    np.testing.assert_array_equal(ray.gallery_labels, plain.gallery_labels)
    np.testing.assert_allclose(ray.gallery_embeddings, plain.gallery_embeddings, atol=1e-5)
    assert ray.metrics["test"]["precision_at_1"] == plain.metrics["test"]["precision_at_1"]

    config = cfg(shapes, tmp_path / "x")
    pl, fitted, events = plan(config, silent), Fitted(plain.model(), "kept", []), []
    rows, alone = embed_gallery(pl, fitted, config, "cpu", silent)
    rows_ray, pooled = embed_gallery(pl, fitted, config, "cpu", events.append, ray="")
    assert len([e for e in events if e.stage == Stage.EMBED]) > 1  # block by block (alone: one batch of 64)
    np.testing.assert_array_equal(rows_ray, rows)
    np.testing.assert_allclose(pooled, alone, atol=1e-5)


@pytest.mark.slow
def test_add_with_ray__the_same_gallery_as_adding_in_one_process(local_ray, tmp_path):
    import shutil

    from embedder.verbs.add import add_images
    from embedder.verbs.pipeline import train

    shapes = make_shapes_folder(tmp_path / "shapes")
    more = make_shapes_folder(tmp_path / "more", per_class=5, seed=7)
    train(cfg(shapes, tmp_path / "plain"))
    shutil.copytree(tmp_path / "plain", tmp_path / "ray")
    before = len(load_run(tmp_path / "plain").gallery_paths)
    add_images(tmp_path / "plain", more)
    events = []
    add_images(tmp_path / "ray", more, progress=events.append, ray="")
    assert any(e.stage == "embed" for e in events)
    plain, ray = load_run(tmp_path / "plain"), load_run(tmp_path / "ray")
    assert ray.gallery_paths == plain.gallery_paths and len(plain.gallery_paths) == before + 15
    np.testing.assert_allclose(ray.gallery_embeddings, plain.gallery_embeddings, atol=1e-5)


def test_add_cli__ray_takes_an_optional_address():
    parser = build_parser()
    assert parser.parse_args(["add", "RUN", "DIR"]).ray is None
    assert parser.parse_args(["add", "RUN", "DIR", "--ray"]).ray == ""


def test_read_shards__puts_rows_back_in_input_order_and_refuses_a_gap(tmp_path):
    (tmp_path / SHARD_MARKER).touch()
    np.savez(tmp_path / "part-000000.npz", rows=np.array([2, 0]), embeddings=np.array([[2.0], [0.0]], np.float32))
    np.savez(tmp_path / "part-000001.npz", rows=np.array([1]), embeddings=np.array([[1.0]], np.float32))
    np.testing.assert_array_equal(read_shards(tmp_path), [[0.0], [1.0], [2.0]])
    (tmp_path / "part-000001.npz").unlink()
    with pytest.raises(EmbedderError, match="do not cover rows"):
        read_shards(tmp_path)


def test_read_shards__a_folder_we_did_not_write_is_refused(tmp_path):
    with pytest.raises(EmbedderError, match="not a folder of embedding shards"):
        read_shards(tmp_path)


def test_embed_with_ray__never_writes_into_a_folder_that_holds_files(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "notes.txt").write_text("mine")
    net = _network()
    with pytest.raises(EmbedderError, match="not an empty folder"):
        embed_with_ray(net.config, net.state_dict(), [], tmp_path / "shards")
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["notes.txt"]


def test_plan_pool__one_actor_per_gpu_else_per_cpu_share():
    assert plan_pool({"CPU": 8.0}) == Pool(8, 1, 0)
    assert plan_pool({"CPU": 8.0}, cpus_per_worker=4) == Pool(2, 4, 0)
    assert plan_pool({"CPU": 32.0, "GPU": 4.0}) == Pool(4, 1, 1)
    assert plan_pool({"CPU": 8.0}, workers=2) == Pool(2, 1, 0)
    assert plan_pool({"CPU": 2.0}, workers=16) == Pool(2, 1, 0)  # never more actors than the cluster can hold


def test_without_ray__one_line_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EmbedderError, match=r"pip install 'ray\[data\]'"):
        import_ray()


def test_the_library_and_the_cli_import_without_ray():
    modules = "embedder.cli, embedder.verbs.pipeline, embedder.network.ray_embed"
    code = f"import sys, {modules}; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_train_cli__ray_takes_an_optional_address():
    parser = build_parser()
    assert parser.parse_args(["train"]).ray is None
    assert parser.parse_args(["train", "--ray"]).ray == ""
    assert parser.parse_args(["train", "--ray", "ray://head:10001"]).ray == "ray://head:10001"
