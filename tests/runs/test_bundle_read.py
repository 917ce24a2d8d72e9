"""embedder/runs/bundle_read.py: a run read back is checked as a whole. Damage and tampering are one line naming the
file, and nothing in a file runs as code."""

import json

import numpy as np
import pytest
from PIL import Image

from embedder.config import IndexSettings
from embedder.errors import EmbedderError
from embedder.runs.run import load_run
from tests.helpers import TRAIN_OF_SCHEMA_2, Payload, copy_run, rewrite_checksums


def _one_line(exc_info, *parts):
    message = str(exc_info.value)
    assert "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, message


def _set(config: dict, dotted: str, value):
    *parents, key = dotted.split(".")
    for p in parents:
        config = config[p]
    if value is KeyError:
        del config[key]
    else:
        config[key] = value


def test_planted_pickle_in_model_pt_never_runs(tmp_path, digits_run):
    import torch

    run_dir = copy_run(digits_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, run_dir / "model.pt")
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)  # the checksum no longer matches
    _one_line(info, "model.pt", "checksum")
    rewrite_checksums(run_dir)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir).model()
    _one_line(info, "model.pt", "never loaded")
    assert not marker.exists()


def test_planted_pickle_in_gallery_npz_never_runs(tmp_path, digits_run):
    run_dir = copy_run(digits_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    with np.load(digits_run / "gallery.npz") as npz:
        arrays = dict(npz)
    arrays["paths"] = np.array([Payload(marker)] * len(arrays["paths"]), dtype=object)
    np.savez(run_dir / "gallery.npz", **arrays)
    rewrite_checksums(run_dir)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "gallery.npz", "pickled objects")
    assert "allow_pickle=True" not in str(info.value)
    assert not marker.exists()


def _with_gallery(digits_run, run_dir, **changes):
    """A copy of the digits run whose gallery.npz has arrays replaced (None: removed), checksums made to match."""
    copy_run(digits_run, run_dir)
    with np.load(digits_run / "gallery.npz") as npz:
        arrays = dict(npz)
    arrays.update(changes)
    np.savez(run_dir / "gallery.npz", **{k: v for k, v in arrays.items() if v is not None})
    rewrite_checksums(run_dir)
    return run_dir


@pytest.mark.parametrize(
    "reference, rows",
    [
        (np.zeros((5, 4)), np.arange(5)),  # not float16
        (np.full((5, 4), np.nan, np.float16), np.arange(5)),
        (np.zeros(5, np.float16), np.arange(5)),
        (np.zeros((5, 4), np.float16), np.array([0, 1, 2, 3, 10**6])),  # a row past the gallery
        (np.zeros((5, 4), np.float16), np.array([0, 1, 1, 2, 3])),
        (np.zeros((5, 4), np.float16), np.arange(4)),
    ],
)
def test_a_damaged_novelty_reference_is_named(tmp_path, digits_run, reference, rows):
    run_dir = _with_gallery(digits_run, tmp_path / "run", novelty=reference, novelty_rows=rows)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "gallery.npz", "novelty reference")


def test_a_run_written_before_the_novelty_test_loads_and_answers_without_it(tmp_path, digits_run):
    from embedder.answers.predict import Predictor

    predictor = Predictor(load_run(_with_gallery(digits_run, tmp_path / "run", novelty=None, novelty_rows=None)))
    image = np.full((32, 32, 3), 255, np.uint8)
    (answer,) = predictor.predict([Image.fromarray(image)])
    assert not answer.novel and answer.to_json()["novelty_distance"] is None
    assert predictor.novelty_threshold is None


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("model.dim", "128", "model.dim"),
        ("index", KeyError, "index"),
        ("classes", "0123456789", "classes"),
        ("model.backbone", "alexnet", "unknown backbone"),
        ("model.image_size", -3, "model.image_size must be in [8, 1024], got -3"),
        ("model.image_size", 4096, "model.image_size must be in [8, 1024], got 4096"),  # 7.4 GB and minutes a query
        ("train.epochs", 10**9, "train.epochs must be in [0, 10000], got 1000000000"),
        ("index.n_trees", 0, "index.n_trees must be in [1, 1000], got 0"),
        ("train.margin", None, "train.margin"),
    ],
)
def test_config_json_wrong_type_or_missing_key_is_named(tmp_path, digits_run, field, value, expected):
    run_dir = copy_run(digits_run, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    _set(config, field, value)
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "config.json", expected)


def test_truncated_config_json_is_named(tmp_path, digits_run):
    run_dir = copy_run(digits_run, tmp_path / "run")
    (run_dir / "config.json").write_text((digits_run / "config.json").read_text()[:200])
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "config.json is not valid JSON")


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096, b"garbage" * 1000])
def test_damaged_index_is_found_on_load(tmp_path, digits_run, content):
    run_dir = copy_run(digits_run, tmp_path / "run")
    (run_dir / "index.ann").write_bytes(content)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index.ann", "checksum")
    rewrite_checksums(run_dir)  # the structural checks alone also catch it
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index.ann")


def test_index_of_another_gallery_of_the_same_size_is_found(tmp_path, digits_run):
    from embedder.search.index import build_index

    run_dir = copy_run(digits_run, tmp_path / "run")
    run = load_run(digits_run)
    other = np.random.default_rng(0).normal(size=run.gallery_embeddings.shape).astype(np.float32)
    build_index(other / np.linalg.norm(other, axis=1, keepdims=True)).save(run_dir / "index.ann")
    rewrite_checksums(run_dir)
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index.ann", "is not gallery image")


@pytest.mark.slow  # trains a second run
def test_model_pt_of_another_run_with_the_same_network_is_named(tmp_path, digits_run, shapes_folder):
    from embedder.config import TrainConfig
    from embedder.verbs.pipeline import train

    other = train(
        TrainConfig(
            data=str(shapes_folder), out=str(tmp_path / "other"), epochs=1, dim=128, classes_per_batch=3, per_class=4
        )
    ).run_dir
    run_dir = copy_run(digits_run, tmp_path / "run")
    (run_dir / "model.pt").write_bytes((other / "model.pt").read_bytes())
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "model.pt", "copied in from another run")


def test_schema_1_runs_without_checksums_still_load(tmp_path, digits_run):
    run_dir = copy_run(digits_run, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["schema_version"] = 1
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / ".embedder-run").unlink()
    (run_dir / "checksums.json").unlink()
    run = load_run(run_dir)
    assert len(run.gallery_paths) == len(load_run(digits_run).gallery_paths)


def test_a_flat_train_section_written_before_the_stages_loads_into_the_same_config(tmp_path, digits_run):
    run_dir = copy_run(digits_run, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    train = config["train"]
    config["train"] = {name: train[name] for name in TRAIN_OF_SCHEMA_2}  # the old order, no finetune, no cv_patience
    (run_dir / "config.json").write_text(json.dumps(config))
    rewrite_checksums(run_dir)
    loaded = load_run(run_dir).train_config
    assert loaded.to_dict() == {**load_run(digits_run).train_config.to_dict(), "finetune": True, "cv_patience": 5}
    assert loaded.stage(IndexSettings) == IndexSettings(n_trees=train["n_trees"], shard_items=train["shard_items"])


def _as_schema_2(run_dir):
    """The run as schema 2 wrote it: the model's, gallery's and index's checksums in config.json, no manifest."""
    from embedder.runs.folders import sha256

    config = json.loads((run_dir / "config.json").read_text())
    config["schema_version"] = 2
    config["checksums"] = {name: sha256(run_dir / name) for name in ("model.pt", "gallery.npz", "index.ann")}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checksums.json").unlink()
    return run_dir


def test_schema_2_runs_load_and_their_checksums_still_count(tmp_path, digits_run):
    run_dir = _as_schema_2(copy_run(digits_run, tmp_path / "run"))
    assert len(load_run(run_dir).gallery_paths) == len(load_run(digits_run).gallery_paths)
    (run_dir / "index.ann").write_bytes((run_dir / "index.ann").read_bytes()[::-1])
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "index.ann does not match the checksum")


def test_schema_3_checksums_every_file_config_json_too(tmp_path, digits_run):
    for name, edit in [
        ("config.json", lambda t: t.replace('"k": ', '"k":  ', 1)),  # the same values, other bytes
        ("metrics.json", lambda t: t + " "),
        ("split.json", lambda t: t + " "),
    ]:
        run_dir = copy_run(digits_run, tmp_path / name)
        (run_dir / name).write_text(edit((run_dir / name).read_text()))
        with pytest.raises(EmbedderError) as info:
            load_run(run_dir)
        _one_line(info, f"{name} does not match the checksum recorded when the run was written")
    run_dir = copy_run(digits_run, tmp_path / "no-manifest")
    (run_dir / "checksums.json").unlink()
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "missing checksums.json")


def test_newer_schema_says_so(tmp_path, digits_run):
    run_dir = copy_run(digits_run, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    config["schema_version"] = 99
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedderError, match="schema version 99"):
        load_run(run_dir)


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda n: np.zeros((n, 8)), "label-free features"),  # float64, not float16
        (lambda n: np.full((n, 8), np.inf, np.float16), "label-free features"),
        (lambda n: np.zeros((n - 1, 8), np.float16), "shapes"),  # a row short of the gallery
        (lambda n: np.zeros(n, np.float16), "shapes"),
    ],
)
def test_damaged_label_free_features_are_named(tmp_path, digits_run, make, named):
    with np.load(digits_run / "gallery.npz") as npz:
        n = len(npz["labels"])
    run_dir = _with_gallery(digits_run, tmp_path / "run", label_free=make(n))
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    _one_line(info, "gallery.npz", named)


def test_label_free_features_of_every_gallery_image_load(tmp_path, digits_run):
    with np.load(digits_run / "gallery.npz") as npz:
        n = len(npz["labels"])
    features = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float16)
    run = load_run(_with_gallery(digits_run, tmp_path / "run", label_free=features))
    np.testing.assert_array_equal(run.label_free, features)
