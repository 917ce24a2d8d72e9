"""Wrong passwords slow down: after a few, each further attempt from the same browser session, or from the same
client address, must wait twice as long as the one before (up to a minute), whatever the session. An attempt
inside its wait is refused unchecked, so guessing costs the guesser time, not the server.

Process-wide and thread-safe: every session of the server shares it (a module global, so that clearing
Streamlit's caches cannot reset it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FREE = 2  # wrong attempts allowed before the waits begin
LONGEST = 60.0  # seconds: the longest wait
FORGET = 3600.0  # seconds without a wrong attempt after which a key starts afresh


@dataclass
class _Record:
    wrong: int = 0
    last: float = 0.0


def wait_after(wrong: int) -> float:
    """Seconds a key must wait after its ``wrong``-th wrong attempt: 0, 0, then 1, 2, 4, … up to ``LONGEST``."""
    return 0.0 if wrong <= FREE else min(LONGEST, 2.0 ** (wrong - FREE - 1))


class Throttle:
    """Wrong attempts per key (a session, an address); ``clock`` is time.monotonic unless a test sets one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._clock = clock

    def wait(self, keys: list[str]) -> float:
        """Seconds before an attempt from ``keys`` may be checked: the longest wait of any of them (0: now)."""
        now = self._clock()
        with self._lock:
            waits = [r.last + wait_after(r.wrong) - now for k in keys if (r := self._records.get(k))]
        return max([0.0, *waits])

    def wrong(self, keys: list[str]) -> int:
        """Record a wrong attempt from ``keys``; the most wrong attempts any of them has made."""
        now = self._clock()
        with self._lock:
            for key in [k for k, r in self._records.items() if now - r.last > FORGET]:
                del self._records[key]
            records = [self._records.setdefault(k, _Record()) for k in keys]
            for r in records:
                r.wrong, r.last = r.wrong + 1, now
            return max(r.wrong for r in records)

    def right(self, keys: list[str]) -> None:
        """The password was right: these keys start afresh."""
        with self._lock:
            for key in keys:
                self._records.pop(key, None)


_THROTTLE = Throttle()


def throttle() -> Throttle:
    return _THROTTLE
