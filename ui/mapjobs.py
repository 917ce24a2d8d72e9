"""Maps computed in the background: when a page opens a run whose maps are not all stored (it was just trained,
added to, or written by the CLI), a thread computes them with ``embedder.maps.precompute`` while every page stays
usable; Explore shows its progress and opens each map as soon as it is stored.

One map job runs at a time in this server (its cores also answer queries and train); the others wait in order.
A job belongs to one version of a run (``run_version``): when the run is rewritten, its job for the old version is
cancelled and the next page that opens the run starts one for the new version.

Environment:
    EMBEDDER_BACKGROUND_MAPS  1 (default): pages start map jobs; 0: each map is computed when a page asks for it
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from embedder.errors import Cancelled, EmbedderError
from embedder.maps.precompute import missing, precompute
from embedder.maps.project import run_version
from embedder.progress import Progress, Stage
from embedder.runs.run import Run

log = logging.getLogger(__name__)
ENV = "EMBEDDER_BACKGROUND_MAPS"
POLL_SECONDS = 1.0  # how often a page waiting for a map looks at its job


def enabled() -> bool:
    """Whether pages start map jobs (EMBEDDER_BACKGROUND_MAPS; the test suite turns them off where a test does not
    look at maps, to keep the 2 cores for it)."""
    return os.environ.get(ENV, "1").strip() != "0"


@dataclass
class MapJob:
    """The maps of one version of a run, computed in a thread. Each field is replaced whole by the thread, so a
    page rerun never reads half an update."""

    path: Path
    version: str | None
    status: str = "queued"  # queued | running | done | failed | cancelled
    fraction: float = 0.0  # of the whole set of maps
    eta_s: float | None = None  # seconds left, from the rate so far; None until there is a rate
    current: str = ""  # the map being computed, in words
    ready: list[str] = field(default_factory=list)  # the maps stored by this job, in words
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _over: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def cancel(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is over (done, failed or cancelled); False when ``timeout`` seconds passed first."""
        return self._over.wait(timeout)

    def on_progress(self, p: Progress) -> None:
        if p.stage == Stage.MAP:
            e = p.extra
            self.fraction, self.eta_s, self.current, self.ready = e["fraction"], e["eta_s"], e["current"], e["ready"]

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._over.set()

    def _run(self) -> None:
        with _ONE_AT_A_TIME:
            if self._stop.is_set():
                self.status, self.finished = "cancelled", time.time()
                return
            self.status, self.started = "running", time.time()
            try:
                precompute(self.path, self.on_progress, self._stop.is_set)
                self.status = "done"
            except Cancelled:
                self.status = "cancelled"
            except EmbedderError as exc:
                self.error, self.status = str(exc), "failed"
            except Exception:  # a bug: the trace goes to the server log; the page falls back to computing on request
                log.exception("computing the maps of %s failed", self.path)
                self.error, self.status = "computing the maps failed; the details are in the server log", "failed"
            finally:
                self.finished = time.time()


_ONE_AT_A_TIME = threading.Lock()
_LOCK = threading.Lock()
_JOBS: dict[Path, MapJob] = {}  # run folder -> its latest map job (a module global: see ui/jobs.py's registry)


def get(path: str | Path) -> MapJob | None:
    return _JOBS.get(Path(path).resolve())


def ensure(run: Run) -> MapJob | None:
    """The job computing ``run``'s maps: started when some are missing and no job has looked at this version of
    the run yet; a job for an older version is cancelled. None when the run has all its maps."""
    path, version = Path(run.path).resolve(), run_version(run.path)
    with _LOCK:
        job = _JOBS.get(path)
        if job is not None and job.version == version:
            return job
        if job is not None:
            job.cancel()  # the run was rewritten: those maps are of a gallery that is gone
        job = MapJob(path, version)
        _JOBS[path] = job
    if not missing(run):  # stored already (by the CLI, or before this server started)
        job.status, job.fraction, job.finished = "done", 1.0, time.time()
        job._over.set()
        return None
    threading.Thread(target=job.run, name=f"maps {path.name}", daemon=True).start()
    return job
