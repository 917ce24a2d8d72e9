import json
import os

import numpy as np
import pytest

from embedder.answers.predict import Predictor
from embedder.errors import EmbedderError
from embedder.runs.run import list_runs, load_run

SIDE_FILES = {"split.json", "history.json", "metrics.json"}  # checksummed too, from schema 3 on


def test_load_run__round_trip_of_a_trained_run(digits_run):
    run = load_run(digits_run)
    assert run.classes == [str(d) for d in range(10)]
    assert run.model_config.backbone == "convnet"
    n = len(run.gallery_paths)
    assert run.gallery_embeddings.shape == (n, 128)
    np.testing.assert_allclose(np.linalg.norm(run.gallery_embeddings, axis=1), 1.0, atol=1e-5)
    assert all(p.exists() for p in run.gallery_files()[:20])
    test_paths, test_labels = run.queries("test")
    assert len(test_paths) + n == 1797
    assert not set(map(str, test_paths)) & set(map(str, run.gallery_files()))
    assert run.index().size == n
    config = json.loads((digits_run / "config.json").read_text())
    assert config["schema_version"] == 3 and "torch" in config["versions"]
    checksummed = json.loads((digits_run / "checksums.json").read_text())["sha256"]
    assert set(checksummed) == {"config.json", "model.pt", "gallery.npz", "index.ann", *SIDE_FILES}
    assert (digits_run / ".embedder-run").is_file()
    # The saved model reproduces the stored gallery embeddings.
    again = Predictor(run).embed([str(p) for p in run.gallery_files()[:8]])
    np.testing.assert_allclose(again, run.gallery_embeddings[:8], atol=1e-5)


def test_load_run__not_a_run_and_damaged_runs_are_one_line_errors(tmp_path, digits_run):
    with pytest.raises(EmbedderError, match="run folder not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="is not a run folder"):
        load_run(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(digits_run):
        if (digits_run / name).is_file():  # not the app's projections/ cache
            (broken / name).write_bytes((digits_run / name).read_bytes())
    (broken / "index.ann").unlink()
    with pytest.raises(EmbedderError, match="missing index.ann"):
        load_run(broken)
    (broken / "index.ann").write_bytes((digits_run / "index.ann").read_bytes())
    (broken / "gallery.npz").write_bytes(b"not a zip")
    with pytest.raises(EmbedderError, match="damaged run .*gallery.npz does not match"):
        load_run(broken)


def test_list_runs__only_run_folders(tmp_path, digits_run):
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / ".hidden.tmp-1").mkdir()
    link = tmp_path / "digits"
    link.symlink_to(digits_run)
    assert list_runs(tmp_path) == [link]
    assert list_runs(tmp_path / "missing") == []


# --- Damage and tampering: every case is one line naming the file, and nothing in a file runs as code ---


# --- What --out may replace ---
