"""A run's answer for new images: the label, its calibrated confidence, the neighbours, a flat row for a CSV."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedder.answers.predict import Predictor
from embedder.runs.run import load_run
from tests.helpers import held_out_digit

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.slow


def test_predict__confidence_is_the_calibrated_probability_and_the_vote_share_stays(digits_run):
    run = load_run(digits_run)
    predictor = Predictor(run)
    assert predictor.calibration is not None and predictor.k == run.train_config.k
    paths, labels = run.queries("test")
    preds = predictor.predict([str(p) for p in paths[:30]])
    assert all(len(p.neighbours) == run.train_config.k for p in preds)
    assert all(0 < p.confidence < 1 and 0 < p.vote_share <= 1 for p in preds)
    right = [p.label == run.classes[label] for p, label in zip(preds, labels[:30])]
    confident = [p.confidence for p, ok in zip(preds, right) if ok]
    assert sum(right) >= 27 and min(confident) > 0.5


def test_prediction_to_row__relative_paths_when_asked(digits_run):
    run = load_run(digits_run)
    pred = Predictor(run).predict([str(run.queries("test")[0][0])], names=["a.png"], k=2)[0]
    row = pred.to_row(run.gallery_paths)
    assert row["file"] == "a.png" and set(json.loads(row["votes"])) <= set(run.classes)
    assert row["neighbours"].count(" | ") == 1 and str(run.data_root) not in row["neighbours"]
    assert str(run.data_root) in pred.to_row()["neighbours"]


def test_readme_library_snippet_labels_a_held_out_digit(digits_run, tmp_path):
    """README's snippet on a trained run: the label, a confidence, and not novel (test_docs runs it on the demo's
    first answer and checks the label alone)."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(from embedder import Predictor, load_run\n.*?)```", readme, re.S).group(1)
    shutil.copytree(digits_run, tmp_path / "runs" / "demo")
    data, label = held_out_digit(digits_run)
    (tmp_path / "digit.png").write_bytes(data)
    (tmp_path / "snippet.py").write_text(snippet)
    done = subprocess.run([sys.executable, "snippet.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer, confidence, novel, *_ = done.stdout.split()
    assert (answer, novel) == (label, "False") and confidence.endswith("%")


def test_docs_predict_json_shows_every_key_a_prediction_has(digits_run):
    page = (ROOT / "docs" / "cli.md").read_text()
    after = page.index("predict runs/demo ~/.cache/embedder/digits/0/0048.png --k 3 --json")
    shown = re.search(r"```text\n[^\n]*\n(\[.*?\n\])\n```", page[after:], re.S).group(1)  # its output, below it
    run = load_run(digits_run)
    (answer,) = Predictor(run).predict([str(run.queries("test")[0][0])], k=3)
    assert list(json.loads(shown)[0]) == list(answer.to_json())
