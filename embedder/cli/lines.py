"""The CLI's progress on stderr (``Bars``): tqdm bars on a terminal, and plain lines when stderr is not one.

A bar redraws itself with carriage returns, and a log file keeps every one of them: ``train ... > log 2>&1`` used to
hold thousands of redraws on a few lines. Here a stage gets one line when it ends, and while it runs a line at most
every few seconds: when it has moved on by a tenth, or when half a minute has passed without a line (a slow stage
still shows it is alive). Each line has the count, the share done, the time so far and tqdm's estimate of the time
left (``tqdm.format_meter``, so the numbers read as the bar's do).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

from ..progress import Progress

_RUNNING = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) after {elapsed}, about {remaining} left{postfix}"
_ENDED = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) in {elapsed}{postfix}"
_UNCOUNTED = "{desc}: {n_fmt} after {elapsed}{postfix}"  # a stage that does not know its total


@dataclass(frozen=True)
class Cadence:
    """How often a running stage gets a line."""

    every: float = 5.0  # the fewest seconds between two lines
    step: float = 0.1  # the share of the total a stage must move on by before the next line, unless quiet has passed
    quiet: float = 30.0  # the most seconds without a line


class ProgressLines:
    """The part of tqdm's bar the CLI uses (``n``, ``desc``, ``update``, ``set_postfix``, ``close``), as lines.

    Args:
        total: the count at which the stage is done (0: unknown).
        desc: the stage's name, the start of every line.
        file: where the lines go (the CLI's stderr).
        cadence: how often a running stage gets a line (``Cadence``).
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        file: TextIO,
        cadence: Cadence = Cadence(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.file, self.clock = total, desc, file, clock
        self.every, self.step, self.quiet = cadence.every, cadence.step, cadence.quiet
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.said_at = clock()
        self.said_n = 0

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.total and self.n >= self.total:
            return  # the stage's end line comes from close(), once
        now = self.clock()
        since = now - self.said_at
        moved = not self.total or self.n - self.said_n >= self.step * self.total
        if since >= self.quiet or (since >= self.every and moved):
            self._say(now, ended=False)

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._say(self.clock(), ended=True)

    def _say(self, now: float, ended: bool) -> None:
        form = _UNCOUNTED if not self.total else _ENDED if ended else _RUNNING
        elapsed, total, postfix = now - self.start, self.total or None, self.postfix or None
        line = tqdm.format_meter(self.n, total, elapsed, prefix=self.desc, bar_format=form, postfix=postfix)
        print(line, file=self.file, flush=True)
        self.said_at, self.said_n = now, self.n


class Bars:
    """Turns Progress events into progress on stderr: tqdm bars on a terminal, plain lines when stderr is not one
    (a log file, a pipe: ``train ... > log 2>&1`` gets lines, not carriage returns: ``ProgressLines`` below)."""

    def __init__(self, plain: bool | None = None) -> None:
        from tqdm import tqdm

        self.tqdm, self.bar, self.key = tqdm, None, None
        self.plain = not sys.stderr.isatty() if plain is None else plain

    def __call__(self, p: Progress) -> None:
        if p.stage == "queryable":  # the news a script may wait for: on stdout
            self.close()
            self.tqdm.write(p.message, file=sys.stdout)
            sys.stdout.flush()
            return
        if p.stage in ("note", "done") or (not p.total and p.stage not in ("train", "epoch")):  # a line, no bar
            self.close()
            if p.message and p.stage != "done":
                self._say(f"{p.stage}: {p.message}")
            return
        if p.stage == "epoch":
            s = p.stats
            self.close()
            self._say(
                f"epoch {s.epoch}: loss {s.loss:.4f}  active {s.active_fraction:.2f}  d(a,p) {s.ap_distance:.3f}  "
                f"d(a,n) {s.an_distance:.3f}  val"
                + (f" labels {s.val_label_accuracy:.3f}" if s.val_label_accuracy is not None else "")
                + f"  P@1 {s.val_precision_at_1:.3f}  MAP@R {s.val_map_at_r:.3f}"
                + (f"  unseen MAP@R {s.val_unseen_map_at_r:.3f}" if s.val_unseen_map_at_r is not None else "")
                + ("  *" if s.best else "")
            )
            return
        key = (p.stage, p.epoch, p.message)
        if key != self.key:
            self.close()
            desc = f"epoch {p.epoch}" if p.stage == "train" else f"{p.stage}: {p.message}" if p.message else p.stage
            if self.plain:
                self.bar = ProgressLines(p.total, desc, sys.stderr)
            else:
                self.bar = self.tqdm(total=p.total, desc=desc, file=sys.stderr, leave=False)
            self.key = key
        if p.loss is not None:
            self.bar.set_postfix(loss=f"{p.loss:.4f}", refresh=False)
        self.bar.update(p.done - self.bar.n)  # a bar throttles its redraws, the lines themselves

    def _say(self, line: str) -> None:
        """A line of its own, between bars (tqdm.write keeps an open bar below it)."""
        if self.plain:
            print(line, file=sys.stderr, flush=True)
        else:
            self.tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None
