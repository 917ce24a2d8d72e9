"""Where runs live and which one is active (per browser session).

Environment:
    EMBEDDER_RUNS_DIR  folder of run bundles the run picker lists (default: runs)
    EMBEDDER_RUN       the run a new session opens on (default: $EMBEDDER_RUNS_DIR/demo). When it is not set
                       and the demo run is missing, the app trains the demo run in the background.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from embedder.runs.run import is_run

from . import auth, sessions

RUNS_DIR_ENV = "EMBEDDER_RUNS_DIR"
RUN_ENV = "EMBEDDER_RUN"
ACTIVE = "active_run"  # session_state key: str path of the active run folder
ENTERED = "entered_through_app"  # session_state key: app.py has set up navigation for this session
REQUESTED = "requested_page"  # session_state key: the page a deep link asked for before navigation existed
LINK_READ = "linked_run_read"  # session_state key: the run a shared link names has been opened


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).expanduser().resolve()


def demo_run_path() -> Path:
    return runs_dir() / "demo"


def default_run_path() -> Path:
    return Path(os.environ[RUN_ENV]).expanduser().resolve() if os.environ.get(RUN_ENV) else demo_run_path()


def active_run_path() -> Path:
    if ACTIVE not in st.session_state:
        st.session_state[ACTIVE] = str(default_run_path())
    return Path(st.session_state[ACTIVE])


def set_active_run(path: str | os.PathLike) -> None:
    st.session_state[ACTIVE] = str(Path(path).resolve())
    sessions.touch(Path(st.session_state[ACTIVE]))


def open_linked_run(params: Mapping[str, str]) -> None:
    """Once per session, before anything shows the active run: make the run a shared link names active
    (``?run=NAME``: a folder under the runs folder, never a path; an unknown name is ignored)."""
    if st.session_state.get(LINK_READ):
        return
    st.session_state[LINK_READ] = True
    name = params.get("run", "")
    if name and "/" not in name and "\\" not in name and not name.startswith("."):
        path = runs_dir() / name
        if is_run(path):
            set_active_run(path)


def protected_runs() -> list[Path]:
    """Runs a browser may never overwrite: the demo and the run the operator named in EMBEDDER_RUN."""
    return [demo_run_path(), default_run_path()]


def require_app(page_file: str) -> None:
    """Send a session that opened a page by its URL on a freshly started server through app.py.

    Until app.py has run once, Streamlit maps /query and friends onto pages/*.py by file name and runs
    the page alone, with a sidebar of file names; app.py sets up the real navigation, then opens the
    page that was asked for (``page_file``, the calling page's ``__file__``).
    """
    # A page run alone must not get past the password either: app.py asks for it.
    if not st.session_state.get(ENTERED) or not auth.allowed():
        st.session_state[REQUESTED] = (
            Path(page_file).resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
        )
        st.switch_page("app.py")


def open_requested_page() -> None:
    """Called by app.py once navigation exists: open the page a deep link asked for, if any."""
    target = st.session_state.pop(REQUESTED, None)
    if target:
        st.switch_page(target)
