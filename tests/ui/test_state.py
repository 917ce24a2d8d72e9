"""ui/state.py: where runs live, which run a session opens on and keeps active, which runs are protected."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from ui import state


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv(state.RUNS_DIR_ENV, raising=False)
    monkeypatch.delenv(state.RUN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_runs_dir__runs_under_the_working_folder_unless_set(no_env, monkeypatch):
    assert state.runs_dir() == no_env / "runs"
    assert state.default_run_path() == state.demo_run_path() == no_env / "runs" / "demo"
    monkeypatch.setenv(state.RUNS_DIR_ENV, "elsewhere/../saved")
    assert state.runs_dir() == no_env / "saved"
    assert state.default_run_path() == no_env / "saved" / "demo"


def test_default_run_path__embedder_run_wins_and_both_it_and_the_demo_are_protected(no_env, monkeypatch):
    monkeypatch.setenv(state.RUN_ENV, "mine/main")
    assert state.default_run_path() == no_env / "mine" / "main"
    assert state.protected_runs() == [no_env / "runs" / "demo", no_env / "mine" / "main"]


def _active_script():
    import streamlit as st

    from ui import state

    if st.button("switch", key="switch"):
        state.set_active_run(st.session_state["target"])
    st.session_state["shown"] = str(state.active_run_path())


def test_active_run__a_session_opens_on_the_default_and_keeps_what_it_switched_to(no_env, monkeypatch):
    monkeypatch.setenv(state.RUN_ENV, str(no_env / "main"))
    at = AppTest.from_function(_active_script)
    at.session_state["target"] = str(no_env / "other" / ".." / "picked")
    at.run()
    assert at.session_state["shown"] == str(no_env / "main")
    at.button(key="switch").click().run()
    assert at.session_state["shown"] == str(no_env / "picked")  # stored resolved
    at.run()
    assert at.session_state["shown"] == str(no_env / "picked")
    fresh = AppTest.from_function(_active_script)
    fresh.session_state["target"] = "unused"
    assert fresh.run().session_state["shown"] == str(no_env / "main")  # another session is not affected
