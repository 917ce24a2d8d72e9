"""Label files: CSV or JSON rows read strictly, and applied to a scanned image folder as training takes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.images.data import scan_folder
from embedder.images.label_file import LabelRow, parse, read, relabelled
from tests.helpers import make_shapes_folder


def test_parse__rows_with_an_optional_action():
    rows = parse("path,label,action,was\na.png,cat,,dog\nb.png,,remove,dog\nc.png, cat ,relabel,\n")
    assert rows == [LabelRow("a.png", "cat"), LabelRow("b.png", None), LabelRow("c.png", "cat")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,label\na.png,cat\n", "needs a header with the columns path and label"),
        ("path,label\na.png,\n", "line 2: cannot use an empty label"),
        ("path,label\na.png,cats/dogs\n", "may not start with a dot nor hold a slash"),
        ("path,label\na.png,cat\na.png,dog\n", "line 3: a.png is listed twice"),
        ("path,label,action\na.png,cat,delete\n", "unknown action 'delete'"),
        ("path,label\n,cat\n", "line 2: no path"),
    ],
)
def test_parse__refuses_with_the_line(text, message):
    with pytest.raises(EmbedderError, match=message):
        parse(text)


def test_read__mislabels_json_gives_the_suggested_label(tmp_path):
    f = tmp_path / "top.json"
    f.write_text(json.dumps([{"path": "/d/3/1.png", "label": "3", "suggested": "5", "score": 0.9}]))
    assert read(f) == [LabelRow("/d/3/1.png", "5")]
    f.write_text(json.dumps({"path": "x"}))
    with pytest.raises(EmbedderError, match="JSON list of objects"):
        read(f)


def test_read__too_large_is_refused_before_reading(tmp_path, monkeypatch):
    from embedder.images import label_file

    f = tmp_path / "big.csv"
    f.write_text("path,label\n" + "a.png,cat\n" * 100)
    monkeypatch.setattr(label_file, "MAX_BYTES", 100)
    with pytest.raises(EmbedderError, match="larger than"):
        read(f)


def test_relabelled__labels_changed_images_left_out_classes_follow(tmp_path):
    images = scan_folder(make_shapes_folder(tmp_path / "shapes", per_class=3))
    circle = images.paths[0]  # circle/000.png
    rows = [
        LabelRow("circle/000.png", "hexagon"),  # relative to the data folder
        LabelRow(str(images.paths[1]), None),  # absolute: left out
        LabelRow("nowhere.png", "circle"),
    ]
    out, note = relabelled(images, rows)
    assert out.classes == ["circle", "hexagon", "square", "triangle"] and len(out) == len(images) - 1
    assert out.classes[out.labels[out.paths.index(circle)]] == "hexagon"
    assert images.paths[1] not in out.paths
    kept = [p for p in images.paths if p not in (circle, images.paths[1])]
    assert [out.classes[out.labels[out.paths.index(p)]] for p in kept] == [
        images.classes[images.labels[images.paths.index(p)]] for p in kept
    ]
    assert note == "labels from the label file: 1 changed, 1 left out; 1 of its rows name no image of shapes"
    assert np.array_equal(relabelled(images, [])[0].labels, images.labels)
