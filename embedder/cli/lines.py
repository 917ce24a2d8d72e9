"""Progress as plain lines: what the CLI prints in place of a tqdm bar when stderr is not a terminal.

A bar redraws itself with carriage returns, and a log file keeps every one of them: ``train ... > log 2>&1`` used to
hold thousands of redraws on a few lines. Here a stage gets one line when it ends, and while it runs a line at most
every few seconds: when it has moved on by a tenth, or when half a minute has passed without a line (a slow stage
still shows it is alive). Each line has the count, the share done, the time so far and tqdm's estimate of the time
left (``tqdm.format_meter``, so the numbers read as the bar's do).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

_RUNNING = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) after {elapsed}, about {remaining} left{postfix}"
_ENDED = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) in {elapsed}{postfix}"
_UNCOUNTED = "{desc}: {n_fmt} after {elapsed}{postfix}"  # a stage that does not know its total


class ProgressLines:
    """The part of tqdm's bar the CLI uses (``n``, ``desc``, ``update``, ``set_postfix``, ``close``), as lines.

    Args:
        total: the count at which the stage is done (0: unknown).
        desc: the stage's name, the start of every line.
        file: where the lines go (the CLI's stderr).
        every: the fewest seconds between two lines while the stage runs.
        step: the share of ``total`` a stage must move on by before the next line, unless ``quiet`` has passed.
        quiet: the most seconds without a line while the stage runs.
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        file: TextIO,
        every: float = 5.0,
        step: float = 0.1,
        quiet: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.file, self.clock = total, desc, file, clock
        self.every, self.step, self.quiet = every, step, quiet
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
