"""Background training jobs: threads held in a process-wide registry (``st.cache_resource``), so a job keeps
running while its page, other pages and other browser sessions stay responsive."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from embedder.config import Progress, TrainConfig
from embedder.errors import Cancelled, EmbedderError
from embedder.train import TrainResult, train

log = logging.getLogger(__name__)
STAGE_WORDS = {"scan": "Scanning images", "note": "Preparing", "train": "Training", "epoch": "Training",
               "embed": "Embedding the gallery", "index": "Building the index", "evaluate": "Evaluating",
               "write": "Writing the run", "done": "Done"}


@dataclass
class TrainJob:
    """One training run in a thread. Fields are written by the thread and read by page reruns; each update
    replaces a whole value, so a reader never sees half of one."""

    cfg: TrainConfig
    started: float = field(default_factory=time.time)
    status: str = "running"  # running | done | failed | cancelled
    stage: str = "scan"
    done: int = 0
    total: int = 0
    epoch: int = 0
    loss: float | None = None
    history: list[dict] = field(default_factory=list)  # EpochStats dicts, as history.json will hold them
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    result: TrainResult | None = None
    finished: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out).expanduser().resolve()

    @property
    def running(self) -> bool:
        return self.status == "running"

    def on_progress(self, p: Progress) -> None:
        if p.stage == "note":
            self.notes = [*self.notes, p.message]
            return
        if p.stage == "epoch" and p.stats is not None:
            self.history = [*self.history, p.stats.to_dict()]
        self.stage, self.done, self.total, self.epoch = p.stage, p.done, p.total, p.epoch or self.epoch
        if p.loss is not None:
            self.loss = p.loss

    def fraction(self) -> float:
        """Overall progress 0..1: epochs dominate; the gallery, index and evaluation are the last tenth."""
        epochs = max(1, self.cfg.epochs)
        if self.status == "done":
            return 1.0
        if self.stage in ("train", "epoch"):
            within = self.done / self.total if self.total and self.stage == "train" else 1.0
            return min(0.9, 0.9 * ((self.epoch - 1 + within) / epochs))
        tail = {"embed": 0.9, "index": 0.93, "evaluate": 0.95, "write": 0.99, "done": 1.0}
        return tail.get(self.stage, 0.0)

    def describe(self) -> str:
        words = STAGE_WORDS.get(self.stage, self.stage)
        if self.stage in ("train", "epoch"):
            loss = f" · loss {self.loss:.4f}" if self.loss is not None else ""
            return f"{words}: epoch {self.epoch} of at most {self.cfg.epochs}{loss}"
        if self.total:
            return f"{words}: {self.done} / {self.total}"
        return words

    def cancel(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            self.result = train(self.cfg, progress=self.on_progress, should_stop=self._stop.is_set)
            self.status = "done"
        except Cancelled as exc:
            self.error, self.status = str(exc), "cancelled"
        except EmbedderError as exc:
            self.error, self.status = str(exc), "failed"
        except Exception as exc:  # a bug: keep the trace in the server log, one line for the user
            log.error("training job %s failed:\n%s", self.cfg.out, traceback.format_exc())
            self.error, self.status = f"training failed: {type(exc).__name__}: {exc}", "failed"
        finally:
            self.finished = time.time()


class JobRegistry:
    """All training jobs of this server process, keyed by their output folder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Path, TrainJob] = {}

    def start(self, cfg: TrainConfig) -> TrainJob:
        """Start training ``cfg`` in a thread, or return the job already training into the same folder."""
        key = Path(cfg.out).expanduser().resolve()
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.running:
                return job
            job = TrainJob(cfg)
            self._jobs[key] = job
        threading.Thread(target=job.run, name=f"train {key.name}", daemon=True).start()
        return job

    def get(self, out: str | Path) -> TrainJob | None:
        return self._jobs.get(Path(out).expanduser().resolve())

    def all(self) -> list[TrainJob]:
        """Newest first."""
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)


@st.cache_resource
def registry() -> JobRegistry:
    return JobRegistry()
