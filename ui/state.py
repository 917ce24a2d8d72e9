"""Where runs live and which one is active (per browser session).

Environment:
    EMBEDDER_RUNS_DIR  folder of run bundles the run picker lists (default: runs)
    EMBEDDER_RUN       the run a new session opens on (default: $EMBEDDER_RUNS_DIR/demo). When it is not set
                       and the demo run is missing, the app trains the demo run in the background.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

RUNS_DIR_ENV = "EMBEDDER_RUNS_DIR"
RUN_ENV = "EMBEDDER_RUN"
ACTIVE = "active_run"  # session_state key: str path of the active run folder


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
