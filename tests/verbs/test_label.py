"""label_folder on a real run: every image under a folder answered a batch at a time into a CSV (or JSON Lines) whose
rows are the Predictor's answers; a stop keeps what is written and resume carries on without answering anything
twice; an unreadable file gets a row with its reason; "unknown" that would swallow everything is switched off."""

from __future__ import annotations

import csv
import json

import pytest

from embedder.answers.predict import Predictor
from embedder.errors import Cancelled, EmbedderError
from embedder.runs.run import load_run
from embedder.verbs.label import COLUMNS, LabelOptions, label_folder
from tests.helpers import make_shapes_folder


@pytest.fixture(scope="module")
def run(shapes_run):
    return load_run(shapes_run)


@pytest.fixture
def folder(tmp_path):
    """10 new shapes in nested folders that are not classes, and a file that is not an image."""
    make_shapes_folder(tmp_path / "new" / "batch-1", classes=("circle", "square"), per_class=5, seed=7)
    (tmp_path / "new" / "notes.txt").write_text("not an image")
    return tmp_path / "new"


def rows(path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_label_folder__every_image_answered_as_the_predictor_answers_it(run, folder, tmp_path):
    out = tmp_path / "labels.csv"
    done = label_folder(run, folder, out, LabelOptions(unknown=False, batch=4))
    got = rows(out)
    assert tuple(got[0]) == COLUMNS and done.answered == 10 == len(got)
    paths = sorted(folder.rglob("*.png"))
    assert [r["path"] for r in got] == [p.relative_to(folder).as_posix() for p in paths]
    expected = Predictor(run).predict([str(p) for p in paths])
    for row, pred in zip(got, expected):
        assert row["label"] == pred.label == row["closest"]
        assert float(row["confidence"]) == pytest.approx(pred.confidence, abs=1e-4)
        assert row["neighbours"].split(" | ")[0].split(":")[0] == pred.neighbours[0].label
    assert done.notes[0].startswith("answers at confidence >= 0.95: expected >= 95% right")


def test_label_folder__a_stop_keeps_what_is_done_and_resume_carries_on(run, folder, tmp_path):
    out = tmp_path / "labels.csv"
    asked = iter([False, True])
    with pytest.raises(Cancelled, match="4 images are in"):
        label_folder(run, folder, out, LabelOptions(batch=4), should_stop=lambda: next(asked))
    assert len(rows(out)) == 4
    with out.open("a") as f:
        f.write("batch-1/square/00")  # a line cut off by a kill mid-write
    with pytest.raises(EmbedderError, match="pass --resume"):
        label_folder(run, folder, out, LabelOptions(batch=4))
    done = label_folder(run, folder, out, LabelOptions(batch=4, resume=True))
    assert (done.resumed, done.answered) == (4, 6)
    got = [r["path"] for r in rows(out)]
    assert len(got) == len(set(got)) == 10


def test_label_folder__an_unreadable_image_gets_its_reason(run, folder, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "labels.jsonl"
    done = label_folder(run, folder, out, LabelOptions(as_json=True, batch=4))
    got = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert done.unreadable == 1 and got["broken.png"]["label"] == "" and got["broken.png"]["error"]
    assert len(got) == 11 and all(r["label"] for p, r in got.items() if p != "broken.png")


def test_label_folder__refuses_an_output_inside_the_folder_and_a_folder_without_images(run, folder, tmp_path):
    with pytest.raises(EmbedderError, match="inside the folder being labelled"):
        label_folder(run, folder, folder / "labels.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="no images found"):
        label_folder(run, tmp_path / "empty", tmp_path / "labels.csv")


def test_label_folder__unknown_that_would_swallow_every_answer_is_switched_off(run, folder, tmp_path):
    """Where no distance keeps the answers at the target precision, every answer keeps its label and the result
    says why once; where "unknown" works, far answers are "unknown" and still name their closest label."""
    from dataclasses import replace

    swallowing = replace(
        run,
        metrics={
            **run.metrics,
            "unknown": {"threshold": 0.0, "target_precision": 0.95, "precision": 0.71, "coverage": 0.0},
        },
    )
    done = label_folder(swallowing, folder, tmp_path / "a.csv")
    assert done.unknown == 0 and any("no distance keeps" in n for n in done.notes)
    strict = replace(
        run,
        metrics={
            **run.metrics,
            "unknown": {"threshold": 0.0, "target_precision": 0.95, "precision": 0.99, "coverage": 0.9},
        },
    )
    done = label_folder(strict, folder, tmp_path / "b.csv")
    got = rows(tmp_path / "b.csv")
    assert done.unknown == 10 and all(r["label"] == "unknown" and r["closest"] in run.classes for r in got)
