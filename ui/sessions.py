"""Which run each live browser session has open, so a training started in one session cannot replace a run
that another visitor is looking at.

Process-wide and thread-safe. A module global, not ``st.cache_resource``: any browser can ask Streamlit to clear
the resource cache, and that must not make the app forget who is using what.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

TOKEN = "session_token"  # session_state: this session's key in the registry
# Where Streamlit cannot say whether a session is still connected (AppTest, a bare script run), a session
# counts as live this long after its last page run.
SEEN_TTL = 3600.0


@dataclass
class _Seen:
    run: Path
    session_id: str  # Streamlit's, to ask the runtime whether the browser is still connected
    at: float


class SessionRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    def touch(self, token: str, session_id: str, run: Path) -> None:
        seen = _Seen(Path(run).resolve(), session_id, time.time())
        with self._lock:
            self._seen[token] = seen

    def users(self, run: Path, but: str | None = None) -> int:
        """How many live sessions other than ``but`` have ``run`` open."""
        run = Path(run).resolve()
        with self._lock:
            for token in [t for t, s in self._seen.items() if not _alive(s)]:
                del self._seen[token]
            return sum(1 for t, s in self._seen.items() if t != but and s.run == run)


def _alive(seen: _Seen) -> bool:
    if Runtime.exists():
        connected = Runtime.instance().is_active_session(seen.session_id)
        if isinstance(connected, bool):  # AppTest's stand-in runtime answers with a mock: fall back to the clock
            return connected
    return time.time() - seen.at < SEEN_TTL


_REGISTRY = SessionRegistry()


def registry() -> SessionRegistry:
    return _REGISTRY


def token() -> str:
    """This browser session's key (Streamlit's own session id is the same for every AppTest session)."""
    return st.session_state.setdefault(TOKEN, uuid.uuid4().hex)


def touch(run: Path) -> None:
    """Record that this session has ``run`` open (called on every page run and when the active run changes)."""
    ctx = get_script_run_ctx()
    _REGISTRY.touch(token(), ctx.session_id if ctx else "", run)


def others_using(run: Path) -> int:
    return _REGISTRY.users(run, but=token())
