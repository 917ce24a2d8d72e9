"""Checkpoints of an unfinished training: written each epoch beside the run folder, read by ``--resume``.

A checkpoint holds tensors and plain values only, so it loads with ``weights_only=True``: a file planted in the
work folder cannot run code. The folder is deleted once the run is written, and only if it is ours.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import EmbedderError
from ..progress import Progress, Reporter, Stage
from ..runs.folders import MARKER, foreign_entries
from ..runs.writes import refusals_named, save_torch
from .select import Candidate

WORK_FILES = frozenset({MARKER, "checkpoint.pt", "checkpoint.tmp"})


@dataclass(frozen=True)
class Learning:
    """What training changes, so what a checkpoint saves and ``resume`` restores."""

    model: torch.nn.Module  # the network itself, not its DDP wrapper
    loss: torch.nn.Module  # its state: the proxies of a proxy loss
    optimizer: torch.optim.Optimizer


@dataclass
class Standing:
    """Where the epochs stand; advanced by each epoch (so not frozen) and saved with the checkpoint."""

    best: Candidate  # the best candidate so far
    history: list[dict] = field(default_factory=list)  # one EpochStats dict per epoch
    bad_epochs: int = 0  # epochs since the best one: patience runs out at cfg.patience
    epoch: int = 0  # the last epoch done (0: none)


def work_dir(out: Path) -> Path:
    """Where checkpoints of an unfinished training of ``out`` live (beside it, never inside it)."""
    return out.parent / f".{out.name}.partial"


def checkpoint_file(cfg: TrainConfig) -> Path:
    """The checkpoint of a training into ``cfg.out``, in its ``work_dir``."""
    return work_dir(Path(cfg.out).expanduser().resolve()) / "checkpoint.pt"


def resume_key(cfg: TrainConfig) -> dict:
    """The settings a checkpoint must share with the training that resumes it."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("resume", "overwrite")}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint of tensors and plain values only, so it loads with ``weights_only=True``.

    Raises:
        WriteRefused: the disk is full (or another refusal of the system); the half-written file is removed.
    """
    tmp = path.with_suffix(".tmp")
    with refusals_named(f"a checkpoint into {path.parent}", cleanup=lambda: tmp.unlink(missing_ok=True)):
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / MARKER).touch()
        save_torch(state, tmp)
        tmp.replace(path)


def load_checkpoint(path: Path, cfg: TrainConfig, device) -> dict:
    """Read a checkpoint without running code from it; one line when it is damaged, foreign or for other settings."""
    import pickle

    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise EmbedderError(
            f"cannot resume: {path} holds objects other than weights, which are never loaded "
            "(they could run code); drop --resume to start over"
        ) from None
    except Exception:
        raise EmbedderError(f"cannot resume: {path} is not a checkpoint; drop --resume to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("config") != resume_key(cfg):
        raise EmbedderError(f"cannot resume: {path} was written with other settings; drop --resume to start over")
    return ckpt


def remove_work_dir(wd: Path) -> None:
    """Delete the checkpoint folder once the run is written, only if it holds nothing but our files."""
    if wd.is_dir() and (wd / MARKER).is_file() and not foreign_entries(wd, WORK_FILES):
        shutil.rmtree(wd, ignore_errors=True)


def resume(ckpt_path: Path, cfg: TrainConfig, learning: Learning, device, report: Reporter) -> Standing:
    """Load the checkpoint at ``ckpt_path`` into ``learning`` (the network, the loss's proxies, the optimizer):
    where its epochs stood (the best candidate so far, history, epochs without improvement, the last epoch)."""
    ckpt = load_checkpoint(ckpt_path, cfg, device)
    learning.model.load_state_dict(ckpt["model"])
    learning.loss.load_state_dict(ckpt.get("loss", {}))
    learning.optimizer.load_state_dict(ckpt["optimizer"])
    report(Progress(Stage.NOTE, message=f"resumed from epoch {ckpt['epoch']}"))
    return Standing(Candidate.from_dict(ckpt["best"]), ckpt["history"], ckpt["bad_epochs"], ckpt["epoch"])


def checkpoint_state(cfg: TrainConfig, learning: Learning, standing: Standing) -> dict:
    """What a checkpoint holds after ``standing.epoch``: tensors and plain values only."""
    return {
        "config": resume_key(cfg),
        "model": learning.model.state_dict(),
        "loss": learning.loss.state_dict(),
        "optimizer": learning.optimizer.state_dict(),
        "best": standing.best.to_dict(),
        "history": standing.history,
        "bad_epochs": standing.bad_epochs,
        "epoch": standing.epoch,
    }
