"""corrections.json read like the bundle's other files: its checksum, size and schema checked, a damaged one named
in one line; labels applied on load and taken back for gallery.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.images.label_file import LabelRow
from embedder.runs import corrections
from embedder.runs.run import load_run
from embedder.verbs.relabel import relabel
from tests.helpers import copy_run, rewrite_checksums


@pytest.fixture
def corrected(shapes_run, tmp_path):
    """A run with one image relabelled and one taken out."""
    run_dir = copy_run(shapes_run, tmp_path / "runs" / "shapes")
    paths = load_run(run_dir).gallery_paths
    relabel(run_dir, [LabelRow(paths[0], "hexagon"), LabelRow(paths[1], None)])
    return run_dir


def tamper(run_dir, change) -> None:
    """Edit corrections.json as an attacker who can also fix its checksum would."""
    data = json.loads((run_dir / corrections.FILE).read_text())
    change(data)
    (run_dir / corrections.FILE).write_text(json.dumps(data))
    rewrite_checksums(run_dir)


def test_read__round_trip(corrected):
    c = load_run(corrected).corrections
    assert [x.label for x in c.changes] == ["hexagon"] and len(c.removed) == 1 and len(c.log) == 2
    assert len(c.removed[0].vector()) == load_run(corrected).gallery_embeddings.shape[1]


def test_read__a_file_that_does_not_match_its_checksum_is_named(corrected):
    (corrected / corrections.FILE).write_text((corrected / corrections.FILE).read_text().replace("hexagon", "pentagon"))
    with pytest.raises(EmbedderError, match="corrections.json does not match the checksum"):
        load_run(corrected)


def test_read__missing_while_the_run_records_it(corrected):
    (corrected / corrections.FILE).unlink()
    with pytest.raises(EmbedderError, match="missing corrections.json"):
        load_run(corrected)


def test_read__a_file_the_run_does_not_know(shapes_run, tmp_path):
    run_dir = copy_run(shapes_run, tmp_path / "runs" / "shapes")
    (run_dir / corrections.FILE).write_text(corrections.Corrections().to_json())
    with pytest.raises(EmbedderError, match="no checksum recorded for corrections.json"):
        load_run(run_dir)


def test_read__too_large_is_refused_before_it_is_parsed(corrected, monkeypatch):
    monkeypatch.setattr(corrections, "MAX_BYTES", 100)
    with pytest.raises(EmbedderError, match="not a file of at most"):
        load_run(corrected)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(changes="all"), "field changes"),
        (lambda d: d["changes"][0].update(label="../../etc"), "may not start with a dot nor hold a slash"),
        (lambda d: d["changes"].append(dict(d["changes"][0])), "corrected twice"),
        (lambda d: d["removed"][0].update(embedding="not base64!"), "is not base64"),
        (lambda d: d["removed"][0].update(embedding="AADAfw=="), "not a finite float32 vector"),  # NaN
        (lambda d: d.update(schema=99), "schema 99 is newer"),
        (lambda d: d["log"][0].update(action="rm -rf"), "field log.0.action"),
    ],
)
def test_read__a_damaged_file_is_named_in_one_line(corrected, change, message):
    tamper(corrected, change)
    with pytest.raises(EmbedderError, match=message) as err:
        load_run(corrected)
    assert str(err.value).startswith("damaged run") and "\n" not in str(err.value)


def test_save__keeps_the_stored_labels_and_the_overlay(corrected):
    """Any rewrite of the run (here: save, as add does) keeps gallery.npz's labels and the overlay on top."""
    run = load_run(corrected)
    effective = run.label_names(run.gallery_labels)
    run.save()
    again = load_run(corrected)
    assert again.label_names(again.gallery_labels) == effective and again.corrections.changes
    with np.load(corrected / "gallery.npz", allow_pickle=False) as npz:
        stored = [again.classes[i] for i in npz["labels"]]
    assert stored[0] == again.corrections.changes[0].was != effective[0]
