"""Hostile ONNX files against `python -m embedder import-model` and `predict`: each is refused with exit 2 and one
line naming the model, within the time and memory bars, reading no server file and leaving no run behind.

Before this suite (issue 22): a Constant, sparse or subgraph tensor stored "outside" the file was read from the
working folder into the embeddings; a Loop of 10^15 trips spun for ever; NaN gave "unexpected ValueError"; an
all-zero output was accepted; a graph allocating gigabytes was accepted at 3.3 GB of memory.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.helpers import rewrite_checksums
from tests.hostile import onnx_cases
from tests.hostile.harness import assert_refused, run_cli, snapshot

FAST = {"EMBEDDER_ONNX_SECONDS": "5"}  # the deadline of one call; 60 s by default


def _import(tmp_path, data: bytes, folder, env=None, before: dict | None = None):
    """import-model of ``data`` written to tmp_path/model.onnx, run in tmp_path; with ``before``, check that
    nothing under tmp_path changed but that file."""
    model = tmp_path / "model.onnx"
    model.write_bytes(data)
    before = {**before, **snapshot(model)} if before is not None else None
    args = ("import-model", str(model), "--data", str(folder), "--out", str(tmp_path / "runs" / "mine"))
    outcome = run_cli(*args, "--no-pretrained-baseline", env=env, cwd=tmp_path)
    if before is not None:
        assert snapshot(tmp_path) == before  # no run written, no other file touched
    return outcome


@pytest.mark.parametrize("place", sorted(onnx_cases.EXTERNAL))
def test_a_tensor_stored_in_a_server_file_is_never_read(tmp_path, shapes_folder, place):
    (tmp_path / "passwd").write_bytes(np.float32([42.0]).tobytes())  # what the graph points at, in the cwd
    outcome = _import(tmp_path, onnx_cases.EXTERNAL[place](), shapes_folder, before=snapshot(tmp_path))
    assert_refused(outcome, "is stored in a separate file, which is never read")


@pytest.mark.parametrize(
    "case, words",
    [
        (onnx_cases.endless_loop, ("model.onnx did not answer within 5 s",)),
        (onnx_cases.allocates, ("model.onnx used more than 2048 MB of memory",)),
        (onnx_cases.nan_output, ("model.onnx outputs NaN or infinity for 3 of 3 images",)),
        (onnx_cases.constant_output, ("model.onnx gives the same output for different images (all zeros)",)),
    ],
    ids=["endless loop", "allocates 2 GB", "NaN", "all zeros"],
)
def test_a_graph_that_never_ends_allocates_or_answers_nonsense_is_stopped(tmp_path, shapes_folder, case, words):
    outcome = _import(tmp_path, case(), shapes_folder, env=FAST, before=snapshot(tmp_path))
    assert_refused(outcome, *words)
    assert outcome.seconds < 5 + 30  # the deadline, plus starting Python, torch and the worker on a busy machine


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    """A run imported from a well-behaved graph (each image's pixels, flattened)."""
    from tests.helpers import make_shapes_folder

    root = tmp_path_factory.mktemp("imported")
    folder = make_shapes_folder(root / "shapes", per_class=8)
    outcome = _import(root, onnx_cases.flatten(), folder)
    assert outcome.code == 0, outcome.err
    return root / "runs" / "mine", folder


def test_a_run_whose_model_onnx_turns_endless_is_stopped_at_predict(tmp_path, imported_run):
    run, folder = imported_run
    hostile = tmp_path / "run"
    shutil.copytree(run, hostile)
    (hostile / "model.onnx").write_bytes(onnx_cases.endless_loop())
    rewrite_checksums(hostile)  # whoever can plant the file can also make the checksums match
    query = next(folder.rglob("*.png"))
    assert run_cli("predict", str(run), str(query)).code == 0  # the run itself answers
    outcome = run_cli("predict", str(hostile), str(query), env=FAST)
    # progress: the run's note on its unknown threshold may come first (a tiny imported run has none that holds)
    assert_refused(outcome, "model.onnx of run run did not answer within 5 s", progress=True)


def test_a_run_whose_model_onnx_points_outside_is_named_damaged(tmp_path, imported_run):
    run, folder = imported_run
    hostile = tmp_path / "run"
    shutil.copytree(run, hostile)
    (hostile / "model.onnx").write_bytes(onnx_cases.external_constant_node())
    rewrite_checksums(hostile)
    outcome = run_cli("predict", str(hostile), str(next(folder.rglob("*.png"))))
    assert_refused(outcome, "damaged run", "model.onnx", "stored in a separate file")
