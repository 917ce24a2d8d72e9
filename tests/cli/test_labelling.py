"""python -m embedder label | relabel | corrections end to end on a real run, and their user errors: one line on
stderr, exit code 2."""

from __future__ import annotations

import csv

import pytest

from embedder.cli.main import main
from embedder.runs.run import load_run
from tests.helpers import copy_run, make_shapes_folder, rewrite_checksums


@pytest.fixture
def run_dir(shapes_run, tmp_path):
    return copy_run(shapes_run, tmp_path / "runs" / "shapes")


def test_label__writes_the_csv_and_says_the_promise_first(run_dir, tmp_path, capsys):
    folder = make_shapes_folder(tmp_path / "new", per_class=2, seed=3)
    out = tmp_path / "labels.csv"
    assert main(["label", str(run_dir), str(folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "answers at confidence >= 0.95: expected >= 95% right" in captured.err
    assert captured.out.startswith("labelled 6 images")
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 6 and {"path", "label", "confidence", "vote_share", "unknown", "novel", "closest"} <= set(
        rows[0]
    )
    assert main(["label", str(run_dir), str(folder), "--out", str(out), "--resume"]) == 0
    assert "labelled 0 images (6 more were labelled before)" in capsys.readouterr().out


def test_relabel_corrections_and_undo(run_dir, tmp_path, capsys):
    run = load_run(run_dir)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f"path,label\n{run.gallery_paths[0]},hexagon\n{run.data_root / run.gallery_paths[1]},square\n")
    assert main(["relabel", str(run_dir), str(fixes)]) == 0
    assert "relabelled" in capsys.readouterr().out
    out = tmp_path / "corrections.csv"
    assert main(["corrections", str(run_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["label"] for r in rows][0] == "hexagon" and all(r["by"] and r["at"] for r in rows)
    assert main(["relabel", str(run_dir), "--undo"]) == 0
    assert not load_run(run_dir).corrections.changes
    assert main(["relabel", str(run_dir), str(out)]) == 0  # the export reads back as it is
    assert load_run(run_dir).classes[load_run(run_dir).gallery_labels[0]] == "hexagon"


@pytest.mark.parametrize(
    "args, message",
    [
        (["relabel", "{run}"], "give a CSV of corrections"),
        (["relabel", "{run}", "{tmp}/none.csv"], "label file not found"),
        (["relabel", "{run}", "{tmp}/bad.csv"], "needs a header with the columns path and label"),
        (["label", "{run}", "{tmp}/nowhere", "--out", "{tmp}/l.csv"], "folder not found"),
        (["label", "{run}", "{tmp}", "--out", "{tmp}/l.csv", "--k", "0"], "--k must be at least 1"),
    ],
)
def test_labelling_commands__user_errors_exit_2_with_one_line(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "bad.csv").write_text("file,name\nx,y\n")
    assert main([a.format(run=run_dir, tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_predict__unknown_that_would_swallow_every_answer_is_said_once_and_left_off(run_dir, tmp_path, capsys):
    """Issue 26's 100,000 overlapping images: no distance kept the answers 95% right, so "unknown" fell to the
    smallest distance and swallowed nearly everything. Now: said once, and every answer keeps its label."""
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["unknown"] = {"threshold": 0.0, "target_precision": 0.95, "precision": 0.71, "coverage": 0.001}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    rewrite_checksums(run_dir)  # metrics.json is checksummed: the edit stands for a run written that way
    images = [str(p) for p in sorted(make_shapes_folder(tmp_path / "q", per_class=1, seed=4).rglob("*.png"))]
    assert main(["predict", str(run_dir), *images, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("no distance keeps this run's answers 95% right") == 1
    assert all(p["label"] != "unknown" for p in json.loads(captured.out))
