"""relabel and undo_last on a real run: labels as an overlay that every reader sees at once, images out of the gallery
and back exactly, batches taken back in order, held-out metrics scored again, the image files never touched."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from embedder.answers.rescore import BASELINES_NOTE
from embedder.errors import EmbedderError
from embedder.images.label_file import LabelRow, read
from embedder.runs.run import load_run
from embedder.verbs.relabel import relabel, undo_last
from tests.helpers import copy_run, writing_elsewhere


@pytest.fixture
def run_dir(shapes_run, tmp_path):
    return copy_run(shapes_run, tmp_path / "runs" / "shapes")


def digests(folder) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def stored_labels(run_dir) -> np.ndarray:
    with np.load(run_dir / "gallery.npz", allow_pickle=False) as npz:
        return npz["labels"]


def test_relabel__labels_change_for_every_reader_and_gallery_npz_keeps_the_originals(run_dir):
    run = load_run(run_dir)
    files_before, npz_before = digests(run.data_root), (run_dir / "gallery.npz").read_bytes()
    first, second = run.gallery_paths[0], run.gallery_paths[1]
    other = next(c for c in run.classes if c != run.classes[run.gallery_labels[0]])
    done = relabel(run_dir, [LabelRow(first, other), LabelRow(str(run.data_root / second), "hexagon")])
    assert (done.changed, done.new_classes, done.not_found) == (2, ["hexagon"], [])

    after = load_run(run_dir)
    assert after.label_names(after.gallery_labels[:2]) == [other, "hexagon"]
    assert after.label_names(after.gallery_labels[2:]) == run.label_names(run.gallery_labels[2:])
    assert (run_dir / "gallery.npz").read_bytes() == npz_before  # the overlay, not a rewrite
    assert np.array_equal(stored_labels(run_dir), run.gallery_labels)
    assert digests(run.data_root) == files_before
    assert "corrections.json" in json.loads((run_dir / "checksums.json").read_text())["sha256"]
    change = {c.path: c for c in after.corrections.changes}[first]
    assert (change.label, change.was) == (other, run.classes[run.gallery_labels[0]]) and change.by and change.at


def test_relabel__a_label_change_keeps_the_cached_maps(run_dir):
    from embedder.maps.project import MapKey, cached_project

    run = load_run(run_dir)
    cached_project(run_dir, run.gallery_embeddings, MapKey("pca", 2))
    cached = sorted(p.name for p in (run_dir / "projections").iterdir())
    relabel(run_dir, [LabelRow(run.gallery_paths[0], "hexagon")])
    assert set(cached) <= {p.name for p in (run_dir / "projections").iterdir()}  # and the queries' embeddings


def test_relabel__taken_out_and_put_back_exactly(run_dir):
    run = load_run(run_dir)
    out = run.gallery_paths[3:5]
    files_before = digests(run.data_root)
    done = relabel(run_dir, [LabelRow(p, None) for p in out])
    assert done.removed == 2
    smaller = load_run(run_dir)
    assert len(smaller.gallery_paths) == len(run.gallery_paths) - 2 and not set(out) & set(smaller.gallery_paths)
    assert smaller.index().size == len(smaller.gallery_paths)
    rows, _ = smaller.index().query(run.gallery_embeddings[3:5], 1)  # their own embeddings find someone else
    assert not set(np.array(smaller.gallery_paths)[rows[:, 0]]) & set(out)

    undo_last(run_dir)
    back = load_run(run_dir)
    assert sorted(back.gallery_paths) == sorted(run.gallery_paths)
    row = {p: i for i, p in enumerate(back.gallery_paths)}
    for i, p in enumerate(run.gallery_paths):
        assert np.array_equal(back.gallery_embeddings[row[p]], run.gallery_embeddings[i])
        assert back.classes[back.gallery_labels[row[p]]] == run.classes[run.gallery_labels[i]]
    assert back.corrections.removed == [] and digests(run.data_root) == files_before


def test_undo_last__takes_back_batches_newest_first(run_dir):
    run = load_run(run_dir)
    a, b = run.gallery_paths[0], run.gallery_paths[1]
    relabel(run_dir, [LabelRow(a, "hexagon")])
    relabel(run_dir, [LabelRow(b, "hexagon")])
    label = lambda path: (lambda r: r.classes[r.gallery_labels[r.gallery_paths.index(path)]])(load_run(run_dir))
    undo_last(run_dir)
    assert (label(a), label(b)) == ("hexagon", run.classes[run.gallery_labels[1]])
    undo_last(run_dir)
    assert (label(a), label(b)) == (run.classes[run.gallery_labels[0]], run.classes[run.gallery_labels[1]])
    with pytest.raises(EmbedderError, match="nothing to undo"):
        undo_last(run_dir)


def test_relabel__undo_gives_back_the_labels_gallery_npz_keeps(run_dir, tmp_path):
    run = load_run(run_dir)
    relabel(run_dir, [LabelRow(run.gallery_paths[0], "hexagon"), LabelRow(run.gallery_paths[1], None)])
    csv = tmp_path / "undo.csv"
    csv.write_text(f"path,label,action\n{run.gallery_paths[0]},x,\n{run.gallery_paths[1]},,remove\n")
    done = relabel(run_dir, read(csv), undo=True)
    assert (done.changed, done.restored) == (1, 1)
    back = load_run(run_dir)
    assert sorted(back.gallery_paths) == sorted(run.gallery_paths)
    assert not back.corrections.changes and not back.corrections.removed and "hexagon" not in back.classes


def test_relabel__rows_naming_no_gallery_image(run_dir):
    run = load_run(run_dir)
    done = relabel(run_dir, [LabelRow("nowhere/x.png", "circle"), LabelRow(run.gallery_paths[0], "hexagon")])
    assert done.not_found == ["nowhere/x.png"] and done.changed == 1
    with pytest.raises(EmbedderError, match="none of the 1 rows names an image"):
        relabel(run_dir, [LabelRow("nowhere/x.png", "circle")])


def test_relabel__reads_what_mislabels_json_prints(run_dir, tmp_path):
    """``relabel RUN top.json`` with ``mislabels --json`` output: absolute paths, the suggested label applied."""
    run = load_run(run_dir)
    path = str(run.data_root / run.gallery_paths[0])
    (tmp_path / "top.json").write_text(json.dumps([{"path": path, "label": "circle", "suggested": "hexagon"}]))
    relabel(run_dir, read(tmp_path / "top.json"))
    after = load_run(run_dir)
    assert after.classes[after.gallery_labels[0]] == "hexagon"


def test_relabel__held_out_metrics_are_scored_again_on_the_corrected_gallery(run_dir):
    """Half the gallery images of one class given another label: P@1 moves, and is what an independent search of
    the same embeddings over the corrected labels says."""
    from embedder.answers.predict import Predictor
    from embedder.search.knn import topk

    run = load_run(run_dir)
    victim = run.classes[0]
    rows = [
        LabelRow(p, run.classes[1])
        for p, c in zip(run.gallery_paths, run.label_names(run.gallery_labels))
        if c == victim
    ]
    done = relabel(run_dir, rows)
    after = load_run(run_dir)
    paths, labels = after.queries("test")
    nearest = topk(Predictor(after).embed(paths), after.gallery_embeddings, 1)[0][:, 0]
    scored = np.isin(labels, after.gallery_labels)  # a class left without gallery images is not scored
    expected = float(np.mean(after.gallery_labels[nearest[scored]] == labels[scored]))
    assert after.metrics["test"]["precision_at_1"] == pytest.approx(expected)
    assert done.p_at_1[1] == pytest.approx(expected) and done.p_at_1[0] != done.p_at_1[1]
    assert after.metrics["test"]["baselines_note"] == BASELINES_NOTE


def test_relabel__waits_for_another_writer_then_refuses(run_dir, monkeypatch):
    from embedder.runs import lock

    monkeypatch.setattr(lock, "WAIT_SECONDS", 0.2)
    run = load_run(run_dir)
    with writing_elsewhere(run_dir), pytest.raises(EmbedderError, match=r"being written by another process \(still"):
        relabel(run_dir, [LabelRow(run.gallery_paths[0], "hexagon")])
    assert not load_run(run_dir).corrections


def test_relabel__taken_out_and_put_back_keeps_each_images_label_free_features(photo_run, tmp_path):
    run_dir = copy_run(photo_run, tmp_path / "runs" / "photos")
    run = load_run(run_dir)
    own = {p: run.label_free[i] for i, p in enumerate(run.gallery_paths)}
    relabel(run_dir, [LabelRow(p, None) for p in run.gallery_paths[2:4]])
    smaller = load_run(run_dir)
    assert smaller.label_free.shape == (len(run.gallery_paths) - 2, 1280)
    undo_last(run_dir)
    back = load_run(run_dir)
    for i, p in enumerate(back.gallery_paths):
        np.testing.assert_array_equal(back.label_free[i], own[p])
    for i, p in enumerate(smaller.gallery_paths):
        np.testing.assert_array_equal(smaller.label_free[i], own[p])
