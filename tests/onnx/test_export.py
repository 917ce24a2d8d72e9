"""embedder/onnx/export.py and `python -m embedder export-model`: a trained run leaves as an ONNX file that computes
the run's embeddings, documents its preprocessing, comes back in through `import-model` with the same metrics, and
labels an image with docs/onnx.md's snippet alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import onnx
import pytest

from embedder.cli.main import main
from embedder.errors import EmbedderError
from embedder.onnx.export import export_model
from embedder.runs.run import load_run
from tests.helpers import ROOT, held_out_digit

METRICS = ("precision_at_1", "r_precision", "map_at_r", "knn_accuracy")


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """The digits run exported through the CLI, and what it printed."""
    out = tmp_path_factory.mktemp("exported") / "digits.onnx"
    import io
    from contextlib import redirect_stdout

    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["export-model", str(digits_run), "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_export__computes_the_runs_embeddings_and_says_how_close(exported, digits_run):
    out, printed = exported
    diff = float(re.search(r"max abs difference to the run's embeddings ([0-9.e+-]+)", printed).group(1))
    assert 0 <= diff <= 1e-4
    assert f"checked on {len(load_run(digits_run).queries('val')[0])} validation images" in printed


def test_export__the_file_documents_its_preprocessing(exported, digits_run):
    model = onnx.load(exported[0])
    meta = {p.key: p.value for p in model.metadata_props}
    prep = json.loads(meta["embedder.preprocessing"])
    mc = load_run(digits_run).model_config
    assert (prep["height"], prep["width"], prep["layout"], prep["scale"]) == (
        mc.image_size,
        mc.image_size,
        "nchw",
        "0-1",
    )
    assert (prep["mean"], prep["std"], prep["resize"]) == (list(mc.mean), list(mc.std), mc.resize)
    assert json.loads(meta["embedder.classes"]) == [str(d) for d in range(10)]
    assert "Preprocessing: resize to 32x32" in model.doc_string


def test_export__an_existing_file_is_not_replaced_without_overwrite(digits_run, tmp_path):
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"my own file")
    with pytest.raises(EmbedderError, match="exists: choose another file, or pass --overwrite"):
        export_model(load_run(digits_run), target)
    assert target.read_bytes() == b"my own file"


def test_export_then_import__the_same_run_metrics(exported, digits_run, tmp_path, capsys):
    original = load_run(digits_run)
    args = ["import-model", str(exported[0]), "--data", str(original.data_root), "--out", str(tmp_path / "back")]
    assert main([*args, "--no-pretrained-baseline"]) == 0
    back = load_run(tmp_path / "back")
    assert back.split["test"] == original.split["test"]  # the same held-out queries
    before, after = original.metrics["test"], back.metrics["test"]
    differences = {m: abs(after[m] - before[m]) for m in METRICS}
    print(differences)  # reported with -s
    assert all(d <= 0.005 for d in differences.values()), differences
    assert after["baselines"]["raw_pixels"] == before["baselines"]["raw_pixels"]


def test_docs_snippet_labels_an_image_without_this_package(exported, digits_run, tmp_path):
    page = (ROOT / "docs" / "onnx.md").read_text()
    snippet = re.search(r"```python\n(import json, sys\n.*?)```", page, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 15
    (tmp_path / "label.py").write_text(snippet)
    data, label = held_out_digit(digits_run)
    (tmp_path / "digit.png").write_bytes(data)
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            str(tmp_path / "label.py"),
            str(exported[0]),
            str(digits_run),
            str(tmp_path / "digit.png"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == label
