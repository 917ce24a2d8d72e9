"""embedder/onnx/sandbox.py: a graph runs in one long-lived worker process, reused across calls; a call past its
deadline or its memory stops that worker only, and the next call starts a fresh one. Graphs from
tests/hostile/onnx_cases.py (a few hand-built nodes each)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.onnx.sandbox import Limits, Sandbox
from tests.hostile import onnx_cases

BATCH = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)


def _worker(box: Sandbox):
    return box._state["worker"]


def test_run__answers_as_the_graph_does_and_reuses_its_worker():
    box = Sandbox(onnx_cases.flatten(), "flat")
    first = box.run(BATCH, "x", "y")
    pid = _worker(box).proc.pid
    np.testing.assert_array_equal(first, BATCH.reshape(2, -1))
    np.testing.assert_array_equal(box.run(BATCH[:1], "x", "y"), BATCH[:1].reshape(1, -1))
    assert _worker(box).proc.pid == pid  # one worker for every call: a query pays a round trip, not a start
    folder = Path(_worker(box).folder)
    assert folder.is_dir() and not any(folder.iterdir())  # it runs in an empty private folder
    box.close()
    assert not folder.exists()


def test_run__past_the_deadline_the_worker_is_stopped_and_the_next_call_gets_a_fresh_one():
    box = Sandbox(onnx_cases.endless_loop(), "loop", limits=Limits(seconds=2))
    with pytest.raises(EmbedderError, match=r"^loop did not answer within 2 s \(EMBEDDER_ONNX_SECONDS\)"):
        box.run(BATCH, "x", "y")
    assert "worker" not in box._state
    with pytest.raises(EmbedderError, match="did not answer"):  # a fresh worker, the same endless graph
        box.run(BATCH, "x", "y")


def test_run__past_its_memory_the_worker_is_stopped():
    box = Sandbox(onnx_cases.allocates(gigabytes=1.0), "hungry", limits=Limits(seconds=30, megabytes=512))
    with pytest.raises(EmbedderError, match=r"^hungry used more than 512 MB of memory \(EMBEDDER_ONNX_MEMORY_MB\)"):
        box.run(BATCH, "x", "y")


def test_run__a_worker_that_dies_is_named_and_replaced():
    box = Sandbox(onnx_cases.flatten(), "flat")
    box.run(BATCH, "x", "y")
    os.kill(_worker(box).proc.pid, signal.SIGKILL)
    with pytest.raises(EmbedderError, match=r"^flat stopped its process \(signal SIGKILL\)"):
        box.run(BATCH, "x", "y")
    np.testing.assert_array_equal(box.run(BATCH, "x", "y"), BATCH.reshape(2, -1))


def test_run__a_graph_onnxruntime_cannot_load_is_refused_in_one_line():
    box = Sandbox(b"not a model", "junk")
    with pytest.raises(EmbedderError, match=r"^not a usable ONNX model: onnxruntime cannot run it \(") as info:
        box.run(BATCH, "x", "y")
    assert "\n" not in str(info.value)


def test_limits__from_the_environment_and_refused_when_not_positive(monkeypatch):
    monkeypatch.setenv("EMBEDDER_ONNX_SECONDS", "7.5")
    monkeypatch.setenv("EMBEDDER_ONNX_MEMORY_MB", "300")
    assert Limits.from_env() == Limits(seconds=7.5, megabytes=300)
    monkeypatch.setenv("EMBEDDER_ONNX_MEMORY_MB", "lots")
    with pytest.raises(EmbedderError, match=r"EMBEDDER_ONNX_MEMORY_MB must be a positive number, got 'lots'"):
        Limits.from_env()
