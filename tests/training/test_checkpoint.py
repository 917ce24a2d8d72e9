"""Checkpoints load weights only: a planted file never runs code."""

import pytest
import torch

from embedder.errors import Cancelled, EmbedderError
from embedder.training.checkpoint import work_dir
from embedder.verbs.pipeline import train
from tests.helpers import Payload
from tests.helpers import cfg as _cfg

pytestmark = pytest.mark.slow  # both tests start a training


def test_resume__a_planted_checkpoint_never_runs_code(shapes_folder, tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    work_dir(out).mkdir(parents=True)
    torch.save({"config": {}, "model": Payload(marker)}, work_dir(out) / "checkpoint.pt")
    with pytest.raises(EmbedderError, match="never loaded") as info:
        train(_cfg(shapes_folder, out, resume=True))
    assert "\n" not in str(info.value)
    assert not marker.exists() and not out.exists()


def test_checkpoint__holds_only_weights_and_plain_values(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, epochs=2), should_stop=lambda: work_dir(out).exists())
    ckpt = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)  # raises on anything else
    assert ckpt["epoch"] == 1 and set(ckpt["best"]) == {"name", "metrics", "correct", "epoch", "state"}
