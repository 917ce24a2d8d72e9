"""Background training jobs: threads held in a process-wide registry, so a job keeps running while its page,
other pages and other browser sessions stay responsive.

Environment:
    EMBEDDER_MAX_TRAININGS  how many trainings run at once (default 1); later ones wait in a queue, in order.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from embedder.config import TrainConfig
from embedder.errors import Cancelled, EmbedderError
from embedder.progress import Progress
from embedder.verbs.pipeline import TrainResult, train

from . import uploads

MAX_ENV = "EMBEDDER_MAX_TRAININGS"
UNEXPECTED = "training failed unexpectedly; the details are in the server log"
log = logging.getLogger(__name__)
STAGE_WORDS = {
    "scan": "Scanning images",
    "plan": "Planning",
    "note": "Preparing",
    "validate": "Validating",
    "train": "Training",
    "epoch": "Training",
    "embed": "Embedding the gallery",
    "index": "Building the index",
    "calibrate": 'Calibrating "unknown"',
    "evaluate": "Evaluating",
    "baselines": "Measuring the baselines",
    "write": "Writing the run",
    "queryable": "Answering",
    "map": "Computing the maps",  # maps/precompute.py, when a job computes them after writing the run
    "done": "Done",
}
# Before training: the stages of the first answer (first.py), the first tenth of the bar.
FIRST_ANSWER = ("scan", "plan", "embed", "index", "calibrate", "write", "queryable", "evaluate", "baselines")
# After training: the trained network's gallery, index, evaluation and the swap, the last tenth.
AFTER_TRAINING = {
    **{"embed": 0.9, "index": 0.93, "calibrate": 0.94, "evaluate": 0.95, "baselines": 0.97, "write": 0.99},
    "map": 0.995,
    "done": 1.0,
}


@dataclass
class TrainJob:
    """One training run in a thread. Fields are written by the thread and read by page reruns; each update
    replaces a whole value, so a reader never sees half of one."""

    cfg: TrainConfig
    owner: str | None = None  # the browser session that started it (sessions.token); None: the server's own
    started: float = field(default_factory=time.time)
    status: str = "queued"  # queued | running | done | failed | cancelled
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
    queryable: bool = False  # the run at ``out`` answers already (its first answer); training improves it
    fold: int = 0  # cross-validation: which fold network trains now, of ``folds``
    folds: int = 0
    seconds_left: float | None = None  # the training time still to come, estimated after the last epoch
    _shown: float = 0.0  # the bar's last value: it never goes back
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _over: threading.Event = field(default_factory=threading.Event, repr=False)  # see wait()
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)  # see wait_until()
    _unqueue: Callable[[TrainJob], None] | None = field(default=None, repr=False)  # set by the registry
    # What the job does instead of training ``cfg``: (progress, should_stop) -> TrainResult (an import, whose
    # ``cfg`` still names its data and output folder)
    task: Callable[..., TrainResult] | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out).expanduser().resolve()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def active(self) -> bool:
        """Queued or running: the job will still change."""
        return self.status in ("queued", "running")

    def on_progress(self, p: Progress) -> None:
        # Every stage reports as it works (each batch of a validation or embedding pass): a cancel stops there,
        # within a batch, not at the next training step minutes later. A run already written is kept.
        if self._stop.is_set() and p.stage != "done":
            raise Cancelled("training cancelled; the previous run is unchanged")
        if p.stage == "note":
            self.notes = [*self.notes, p.message]
        else:
            if p.stage == "epoch" and p.stats is not None:
                self.history = [*self.history, p.stats.to_dict()]
            self.stage, self.done, self.total, self.epoch = p.stage, p.done, p.total, p.epoch or self.epoch
            self.queryable = self.queryable or p.stage == "queryable"
            self.fold, self.folds = p.extra.get("fold", self.fold), p.extra.get("folds", self.folds)
            if "seconds_left" in p.extra:
                self.seconds_left = p.extra["seconds_left"]
            if p.loss is not None:
                self.loss = p.loss
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is over (done, failed or cancelled, while queued or running) and the registry has
        freed its slot, started the next job and swept unused uploads. False when ``timeout`` seconds passed first."""
        return self._over.wait(timeout)

    def wait_until(self, predicate: Callable[[TrainJob], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(job)`` holds, checked at every progress report and when the job is over.
        False when it does not hold after ``timeout`` seconds or once the job is over."""
        with self._changed:
            self._changed.wait_for(lambda: predicate(self) or self._over.is_set(), timeout)
        return predicate(self)

    def _end(self) -> None:
        """Called by the registry once nothing of the job is left to do: wakes every wait."""
        self._over.set()
        with self._changed:
            self._changed.notify_all()

    def fraction(self) -> float:
        """Overall progress 0..1, never going back: the first answer is the first tenth, epochs the next eight,
        the trained network's gallery, index and evaluation the last tenth."""
        self._shown = max(self._shown, 1.0 if self.status == "done" else self._where())
        return self._shown

    def _where(self) -> float:
        trained = bool(self.history) or self.epoch > 0
        if self.stage in ("train", "epoch") or (self.stage == "validate" and self.epoch):
            epochs = max(1, self.cfg.epochs)
            within = self.done / self.total if self.total and self.stage == "train" else 1.0
            return max(0.1, min(0.9, 0.1 + 0.8 * ((self.epoch - 1 + within) / epochs)))
        if trained:
            return AFTER_TRAINING.get(self.stage, 0.9)
        if self.stage in FIRST_ANSWER:
            return 0.1 * (FIRST_ANSWER.index(self.stage) + 1) / len(FIRST_ANSWER)
        return 0.1 if self.stage == "validate" else 0.0

    def describe(self) -> str:
        words = STAGE_WORDS.get(self.stage, self.stage)
        if self.stage in ("train", "epoch") or (self.stage == "validate" and self.epoch):
            fold = f"fold {self.fold} of {self.folds}, " if self.folds else ""
            loss = f" · loss {self.loss:.4f}" if self.loss is not None else ""
            left = f" · about {_minutes(self.seconds_left)} left" if self.seconds_left is not None else ""
            return f"{words}: {fold}epoch {self.epoch} of at most {self.cfg.epochs}{loss}{left}"
        if self.total:
            return f"{words}: {self.done} / {self.total}"
        return words

    def cancel(self) -> None:
        """Stop at the next progress report (a batch of training, validation or embedding); a queued job is taken
        out of the queue at once. Its slot frees only when its thread has stopped: never two trainings beside."""
        self._stop.set()
        if self._unqueue is not None:
            self._unqueue(self)

    def run(self) -> None:
        self.status, self.started = "running", time.time()  # elapsed time counts from here, not from queueing
        try:
            if self._stop.is_set():  # cancelled between leaving the queue and this thread starting
                raise Cancelled("training cancelled before it started")
            work = self.task or (lambda **kw: train(self.cfg, **kw))
            self.result = work(progress=self.on_progress, should_stop=self._stop.is_set)
            self.status = "done"
        except Cancelled as exc:
            self.error, self.status = str(exc), "cancelled"
        except EmbedderError as exc:
            self.error, self.status = str(exc), "failed"
        except Exception:  # a bug: the trace goes to the server log; the browser gets a line without paths
            log.exception("training job %s failed", self.cfg.out)
            self.error, self.status = UNEXPECTED, "failed"
        finally:
            self.finished = time.time()


class JobRegistry:
    """All training jobs of this server process, keyed by their output folder. At most ``max_running`` train
    at once; the others wait in a first-in, first-out queue and start as a slot frees."""

    def __init__(self, max_running: int | None = None) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Path, TrainJob] = {}
        self._queue: list[TrainJob] = []
        self._running = 0
        self._max = max_running
        self._held: list[Path] = []  # uploads being unpacked for a job that is not registered yet

    @property
    def max_running(self) -> int:
        if self._max is not None:
            return self._max
        try:
            return max(1, int(os.environ.get(MAX_ENV, "1")))
        except ValueError:
            return 1

    def start(
        self,
        cfg: TrainConfig,
        exclusive: bool = False,
        task: Callable[..., TrainResult] | None = None,
        owner: str | None = None,
    ) -> TrainJob:
        """Queue ``cfg`` and start it when a slot is free, or return the job already queued or training into
        the same folder. ``task``: what to do instead of training ``cfg`` (see ``TrainJob.task``); ``owner``: the
        session starting it (only it, and the operator, may cancel it: auth.may_cancel).

        Raises:
            EmbedderError: ``exclusive`` and a job is already queued or training into that folder.
        """
        key = Path(cfg.out).expanduser().resolve()
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.active:
                if exclusive:
                    raise EmbedderError(f"run '{key.name}' is being trained already: choose another name")
                return job
            job = TrainJob(cfg, owner=owner, _unqueue=self._unqueue, task=task)
            self._jobs[key] = job
            self._queue.append(job)
            ready = self._next_ready()
        for j in ready:
            self._launch(j)
        return job

    def get(self, out: str | Path) -> TrainJob | None:
        return self._jobs.get(Path(out).expanduser().resolve())

    def all(self) -> list[TrainJob]:
        """Newest first."""
        with self._lock:  # a job thread may add one meanwhile
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda j: j.started, reverse=True)

    def position(self, job: TrainJob) -> int | None:
        """1 for the next job to start, 2 for the one after it…; None when ``job`` is not waiting."""
        with self._lock:
            return self._queue.index(job) + 1 if job in self._queue else None

    def data_in_use(self) -> list[Path]:
        """The data folders of queued and running jobs, and uploads being unpacked: they must stay."""
        with self._lock:
            data, held = (
                [j.cfg.data for j in self._jobs.values() if j.active and j.cfg.data != "demo"],
                list(self._held),
            )
        return [Path(d).expanduser().resolve() for d in data] + held

    @contextmanager
    def holding(self, folder: Path) -> Iterator[None]:
        """Keep ``folder`` from being swept while a page unpacks an upload into it and starts its job."""
        folder = Path(folder).resolve()
        with self._lock:
            self._held.append(folder)
        try:
            yield
        finally:
            with self._lock:
                self._held.remove(folder)

    def hold(self, folder: Path) -> None:
        """Keep ``folder`` from being swept until ``release``: an unpacked upload a Review session is labelling."""
        with self._lock:
            self._held.append(Path(folder).resolve())

    def release(self, folder: Path) -> None:
        with self._lock:
            if Path(folder).resolve() in self._held:
                self._held.remove(Path(folder).resolve())

    def sweep(self, runs_dir: Path) -> None:
        """Delete the uploads under ``runs_dir`` that no run and no job refers to any more."""
        try:
            uploads.sweep(runs_dir, in_use=self.data_in_use())
        except OSError:
            log.exception("could not remove unused uploads in %s", runs_dir)

    def _next_ready(self) -> list[TrainJob]:
        """Take jobs off the queue while slots are free (the caller holds the lock and launches them)."""
        ready = []
        while self._queue and self._running < self.max_running:
            job = self._queue.pop(0)
            job.status = "running"  # before the lock is let go, so nobody sees it neither queued nor running
            self._running += 1
            ready.append(job)
        return ready

    def _launch(self, job: TrainJob) -> None:
        threading.Thread(target=self._work, args=(job,), name=f"train {job.out.name}", daemon=True).start()

    def _work(self, job: TrainJob) -> None:
        try:
            job.run()
        finally:
            self._release(job)

    def _release(self, job: TrainJob) -> None:
        """Free the slot of a job that is over, start the next ones, sweep unused uploads; then wake its waits."""
        try:
            with self._lock:
                self._running -= 1
                ready = self._next_ready()
            for j in ready:
                self._launch(j)
            self.sweep(job.out.parent)
        finally:
            job._end()

    def _unqueue(self, job: TrainJob) -> None:
        with self._lock:
            if job not in self._queue:
                return
            self._queue.remove(job)
            job.error, job.status, job.finished = "training cancelled before it started", "cancelled", time.time()
        self.sweep(job.out.parent)
        job._end()


# A module global, not st.cache_resource: any browser can ask Streamlit to clear the resource cache, and the
# running jobs, the queue and the training cap must survive that.
_REGISTRY = JobRegistry()


def registry() -> JobRegistry:
    return _REGISTRY


def _minutes(seconds: float) -> str:
    """``"3 min"``, ``"under a minute"``."""
    return "under a minute" if seconds < 60 else f"{round(seconds / 60)} min"
