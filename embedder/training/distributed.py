"""Training on several processes at once, started by torchrun: ``torchrun --nproc_per_node=N -m embedder train ...``.

torchrun starts N copies of the command with RANK, WORLD_SIZE and LOCAL_RANK set. Each copy (a rank) draws its own
seeded P×K batches; DistributedDataParallel averages the gradients; the loss and the miner see the batch of all
ranks at once (pytorch-metric-learning's DistributedLossWrapper and DistributedMinerWrapper), so a triplet may take
its negative from another rank's images. Rank 0 validates, decides when to stop and writes the run; the other
ranks follow its decision and leave quietly. Without torchrun every function here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

RANK_SEED_STEP = 1_000_003  # rank r draws its batches from seed + r * this: rank 0 draws the single-process stream


@dataclass(frozen=True)
class World:
    """Which process of how many this is."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the process's number on its own machine: its GPU

    @property
    def main(self) -> bool:
        """Whether this process reports, validates and writes (rank 0, or the only process)."""
        return self.rank == 0


def world() -> World:
    """This process's place in the process group (the whole world when there is no group)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def _launched() -> World:
    """What torchrun's environment says, before any group exists."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


@contextmanager
def process_group(device: str = "auto") -> Iterator[World]:
    """Under torchrun with more than one process: join the group for the block (NCCL when ranks train on GPUs,
    gloo on CPU) and leave it after; elsewhere yield the single-process world and do nothing.

    Each rank on a machine takes the GPU numbered by its LOCAL_RANK, so ``torch.device("cuda")`` means its own.
    """
    w = _launched()
    if w.size <= 1 or dist.is_initialized():
        yield world()
        return
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(w.local_rank)
    dist.init_process_group("nccl" if gpu else "gloo")
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when training on several ranks (else ``model`` itself).

    Call it after the last change to which parameters require gradients (frozen stages, frozen BatchNorm): DDP
    reduces the gradients of the parameters that required them when it was built. Building it copies rank 0's
    weights and buffers to every rank.
    """
    if world().size <= 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def global_batch(loss_fn, miner):
    """The loss and the miner over the batch of every rank (pytorch-metric-learning's distributed wrappers).

    The wrapped loss is ``world size ×`` the loss of the gathered batch, so that DDP's averaging of the ranks'
    gradients gives the gradient of the gathered batch's loss; ``world().size`` divides it back for reporting.
    What the loss learns itself (proxies) is outside DDP, and every rank computes the same gradient for it from
    the gathered batch: a hook divides that gradient by the world size, as DDP's averaging does for the network.
    """
    if world().size <= 1:
        return loss_fn, miner
    from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

    size = world().size
    for p in loss_fn.parameters():
        p.register_hook(lambda grad: grad / size)
    return DistributedLossWrapper(loss_fn), miner and DistributedMinerWrapper(miner)


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank, so decisions taken on rank 0 (stop training) keep all ranks in step."""
    if world().size <= 1:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def rank_seed(seed: int) -> int:
    """A seed of this rank's own: each rank draws other P×K batches; rank 0 those of a single-process run."""
    return seed + world().rank * RANK_SEED_STEP
