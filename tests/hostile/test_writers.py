"""Two writers on one run: every command that rewrites a run (train, import-model, add) waits for the one holding it,
says so, and then writes a whole run; none merges silently. (Two `add`s at once: tests/verbs/test_add.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from embedder.runs.lock import writing
from embedder.runs.run import load_run
from tests.helpers import make_shapes_folder
from tests.hostile import onnx_cases
from tests.hostile.harness import CODE


def _command(kind: str, tmp_path, out) -> list[str]:
    data = make_shapes_folder(tmp_path / "shapes", per_class=8)
    if kind == "train":
        return ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--selection", "holdout"]
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_cases.flatten())
    return ["import-model", str(model), "--data", str(data), "--out", str(out), "--no-pretrained-baseline"]


@pytest.mark.parametrize("kind", ["train", "import-model"])
def test_a_writer_waits_for_the_one_holding_the_run_and_says_so(tmp_path, kind):
    out = tmp_path / "runs" / "mine"
    command = [sys.executable, "-m", "embedder", *_command(kind, tmp_path, out)]
    with writing(out):
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, **CODE})
        lines = []
        while not any("being written by another process: waiting" in line for line in lines):
            line = proc.stderr.readline()
            assert line, lines  # it ended without waiting
            lines.append(line)
        assert not out.exists()  # nothing written while the other holds the run
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert len(load_run(out).gallery_paths) > 0


def test_an_endless_graph_frees_the_apps_training_slot(tmp_path, monkeypatch, no_job_outlives_its_test):
    """In the app an import is a job in the one training slot: a graph that never ends fails it in one line, and
    the next job starts."""
    from embedder.verbs.import_model import ImportConfig, import_model
    from ui import jobs

    monkeypatch.setenv("EMBEDDER_ONNX_SECONDS", "2")
    data = make_shapes_folder(tmp_path / "shapes", per_class=4)
    registry = jobs.JobRegistry(max_running=1)
    cfg = ImportConfig(data=str(data), out=str(tmp_path / "runs" / "loop"), pretrained_baseline=False)
    stuck = registry.start(
        cfg.train_config(), task=lambda **kw: import_model(onnx_cases.endless_loop(), cfg, "loop.onnx", **kw)
    )
    ok_cfg = ImportConfig(data=str(data), out=str(tmp_path / "runs" / "flat"), pretrained_baseline=False)
    after = registry.start(
        ok_cfg.train_config(), task=lambda **kw: import_model(onnx_cases.flatten(), ok_cfg, "flat.onnx", **kw)
    )
    assert stuck.wait(60) and stuck.status == "failed"
    assert stuck.error == "loop.onnx did not answer within 2 s (EMBEDDER_ONNX_SECONDS): it was stopped"
    assert after.wait(120) and after.status == "done", after.error
