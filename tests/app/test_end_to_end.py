"""The whole path a user takes: train on the digits, evaluate against baselines, predict held-out images."""

import json
import subprocess
import sys
from pathlib import Path

from embedder.runs.run import load_run

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "embedder", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_digits__trained_beats_untrained_and_predicts_held_out_labels(digits_run):
    result = json.loads(_cli("evaluate", str(digits_run), "--json"))
    assert result["n_queries"] == 359
    assert result["precision_at_1"] >= 0.97
    assert result["precision_at_1"] > result["baselines"]["untrained"]["precision_at_1"]
    assert result["map_at_r"] > result["baselines"]["raw_pixels"]["map_at_r"]
    assert set(result) >= {"precision_at_1", "r_precision", "map_at_r", "knn_accuracy", "n_queries", "baselines"}
    # metrics.json written at training time holds the same numbers.
    stored = json.loads((digits_run / "metrics.json").read_text())["test"]
    assert stored["precision_at_1"] == result["precision_at_1"]

    paths, labels = load_run(digits_run).queries("test")
    picks = list(range(0, len(paths), 36))[:10]
    files = [str(paths[i]) for i in picks]
    out = json.loads(_cli("predict", str(digits_run), *files, "--json", "--no-unknown"))
    correct = sum(o["label"] == str(labels[i]) for o, i in zip(out, picks))
    assert correct >= 9
    # By default answers beyond the calibrated distance, or unlike every gallery image, become "unknown"; nothing
    # else changes. Held-out digits are the gallery's kind: the novelty test lets (almost) all of them through.
    assert result["novelty"]["n"] == 359 and result["novelty"]["novel"] <= 7
    threshold = json.loads((digits_run / "metrics.json").read_text())["unknown"]["threshold"]
    default = json.loads(_cli("predict", str(digits_run), *files, "--json"))
    for d, o in zip(default, out):
        if d["nearest_distance"] > threshold or d["novel"]:
            assert d["label"] == "unknown"
        else:
            assert d["label"] == o["label"]
