"""embedder/training/distributed.py and the torchrun path of train.py: two gloo processes on CPU.

The oracle is the single process: a 2-process group where each rank holds half of a batch must compute the loss of
the whole batch and, after DDP's averaging, its gradient; and ``torchrun --nproc_per_node=2 -m embedder train`` on
the digits must train as well as the single-process run (the ``digits_run`` fixture, same settings).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from embedder.config import TrainConfig
from embedder.runs.run import load_run
from embedder.training import distributed
from embedder.training.objective import loss_and_miner
from tests.helpers import ROOT

CASES = {  # the losses and miners training offers
    "semihard triplets": TrainConfig(miner="semihard"),
    "batch-hard triplets": TrainConfig(miner="batch-hard"),
    "multi-similarity": TrainConfig(loss="multi-similarity"),
    "proxy-anchor": TrainConfig(loss="proxy-anchor"),  # learns proxies of its own, outside DDP
}


def _loss(cfg: TrainConfig):
    """The loss and miner of ``cfg`` for 4 labels in 4 dimensions, its proxies (if any) the same in every process."""
    torch.manual_seed(2)
    return loss_and_miner(cfg, 4, 4)


class _Tiny(nn.Module):
    """(B, 8) -> unit vectors (B, 4): a network small enough to compare every gradient."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.lin(x), dim=1)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 points, 4 labels × 4; each half (rank 0: rows 0-7, rank 1: rows 8-15) holds 2 of every label."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 2)
    return x, y


def _loss_and_grads(model: nn.Module, net: nn.Module, loss_fn, miner, x, y, scale: int) -> dict:
    emb = net(x)
    loss = loss_fn(emb, y, miner(emb, y) if miner else None)
    loss.backward()
    learned = [*model.parameters(), *loss_fn.parameters()]  # the network's weights and the loss's proxies
    return {"loss": loss.item() / scale, "grads": [p.grad.clone() for p in learned]}


def _rank(rank: int, port: int, out: str) -> None:
    """One process of the group: its half of the batch through DDP and the wrapped loss and miner."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    x, y = _batch()
    half = slice(8 * rank, 8 * rank + 8)
    results = {}
    with distributed.process_group("cpu") as world:
        assert world.size == 2 and world.rank == rank
        for name, cfg in CASES.items():
            model = _Tiny()
            loss_fn, miner = distributed.global_batch(*_loss(cfg))
            results[name] = _loss_and_grads(model, distributed.parallel(model), loss_fn, miner, x[half], y[half], 2)
            alone = _Tiny()  # the same half without gathering: what a rank would learn from on its own
            results[name]["alone"] = _loss_and_grads(alone, alone, *_loss(cfg), x[half], y[half], 1)["loss"]
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks__the_loss_and_gradient_of_the_gathered_batch_equal_the_single_process_ones(tmp_path, monkeypatch):
    # Streamlit's script runner (any AppTest earlier in this process) leaves its script as sys.modules["__main__"],
    # which spawned children would re-run; a blank __main__ gives them nothing to re-run.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    x, y = _batch()
    for name, cfg in CASES.items():
        loss_fn, miner = _loss(cfg)
        model = _Tiny()
        assert miner is None or len(miner(model(x), y)[0]), f"{name}: the check needs a batch with something to mine"
        single = _loss_and_grads(model, model, loss_fn, miner, x, y, 1)
        for r in ranks:
            assert r[name]["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-7), name
            assert len(r[name]["grads"]) == len(single["grads"]) == 2 + (name == "proxy-anchor"), name
            for got, want in zip(r[name]["grads"], single["grads"]):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # the check can tell: half a batch on its own has another loss
        assert ranks[0][name]["alone"] != pytest.approx(single["loss"], rel=1e-3), name


def test_world__outside_torchrun_is_one_process_and_every_helper_is_a_no_op(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    model = _Tiny()
    loss_fn, miner = _loss(TrainConfig())
    with distributed.process_group("cpu") as world:
        assert world == distributed.World(0, 1, 0) and world.main
        assert not torch.distributed.is_initialized()
        assert distributed.parallel(model) is model
        assert distributed.global_batch(loss_fn, miner) == (loss_fn, miner)
        assert distributed.agree(True) is True and distributed.agree(False) is False
        assert distributed.rank_seed(7) == 7  # a single process draws the batches it always drew


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["test"]


@pytest.mark.slow
def test_torchrun_two_processes_train_the_digits_as_well_as_one(digits_run, demo_cache, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "embedder", "train", "--data", str(demo_cache), "--out", str(out)]
    cmd += ["--epochs", "3", "--seed", "0", "--schedule", "constant", "--selection", "holdout"]  # as digits_run
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1  # rank 0 writes and reports; rank 1 leaves quietly
    assert not (tmp_path / ".ddp.partial").exists()  # its checkpoints are gone with the run written

    two, one = load_run(out), load_run(digits_run)
    assert two.gallery_paths == one.gallery_paths and two.split == one.split  # the same bundle, other weights
    assert len(two.history) == 3
    m2, m1 = _metrics(out), _metrics(digits_run)
    assert m2["n_queries"] == m1["n_queries"] == 359
    # the same quality within the noise of 359 queries: P@1 within 2 points, MAP@R within 5
    assert m2["precision_at_1"] >= max(0.96, m1["precision_at_1"] - 0.02)
    assert m2["map_at_r"] >= m1["map_at_r"] - 0.05
    assert m2["map_at_r"] > m2["baselines"]["untrained"]["map_at_r"]
