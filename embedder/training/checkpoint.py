"""Checkpoints of an unfinished training: written each epoch beside the run folder, read by ``--resume``.

A checkpoint holds tensors and plain values only, so it loads with ``weights_only=True``: a file planted in the
work folder cannot run code. The folder is deleted once the run is written, and only if it is ours.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import EmbedderError
from ..progress import Progress, Reporter, Stage
from ..runs.folders import MARKER, foreign_entries
from ..runs.writes import refusals_named, save_torch
from .select import Candidate

WORK_FILES = frozenset({MARKER, "checkpoint.pt", "checkpoint.tmp"})


def work_dir(out: Path) -> Path:
    """Where checkpoints of an unfinished training of ``out`` live (beside it, never inside it)."""
    return out.parent / f".{out.name}.partial"


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


def resume(ckpt_path: Path, cfg: TrainConfig, model, loss, optimizer, device, report: Reporter):
    """Load the checkpoint at ``ckpt_path`` into ``model``, ``loss`` (its proxies) and ``optimizer``: (the best
    candidate so far, history, epochs without improvement, the epoch to continue from)."""
    ckpt = load_checkpoint(ckpt_path, cfg, device)
    model.load_state_dict(ckpt["model"])
    loss.load_state_dict(ckpt.get("loss", {}))
    optimizer.load_state_dict(ckpt["optimizer"])
    report(Progress(Stage.NOTE, message=f"resumed from epoch {ckpt['epoch']}"))
    return Candidate.from_dict(ckpt["best"]), ckpt["history"], ckpt["bad_epochs"], ckpt["epoch"] + 1


def checkpoint_state(
    cfg: TrainConfig, model, loss, optimizer, best: Candidate, history, bad_epochs: int, epoch: int
) -> dict:
    """What a checkpoint holds after ``epoch``: tensors and plain values only."""
    return {
        "config": resume_key(cfg),
        "model": model.state_dict(),
        "loss": loss.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": best.to_dict(),
        "history": history,
        "bad_epochs": bad_epochs,
        "epoch": epoch,
    }
