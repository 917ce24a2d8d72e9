"""ui/sessions.py: which run each live browser session has open, so that a training never replaces a run that
someone else is looking at."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ui import sessions
from ui.sessions import SessionRegistry


def test_users__counts_the_other_sessions_with_the_run_open(tmp_path):
    reg = SessionRegistry()
    reg.touch("alice", "", tmp_path / "shared")
    reg.touch("bob", "", tmp_path / "other" / ".." / "shared")  # the same folder by another spelling
    reg.touch("carol", "", tmp_path / "private")
    assert reg.users(tmp_path / "shared") == 2
    assert reg.users(tmp_path / "shared", but="alice") == 1
    assert reg.users(tmp_path / "private", but="carol") == 0
    assert reg.users(tmp_path / "nobody's") == 0


def test_users__a_session_that_moves_on_no_longer_counts(tmp_path):
    reg = SessionRegistry()
    reg.touch("alice", "", tmp_path / "shared")
    reg.touch("alice", "", tmp_path / "next")
    assert reg.users(tmp_path / "shared") == 0 and reg.users(tmp_path / "next") == 1


def test_users__a_session_not_seen_for_the_ttl_is_forgotten(tmp_path, monkeypatch):
    reg = SessionRegistry()
    reg.touch("alice", "", tmp_path / "shared")
    monkeypatch.setattr(sessions, "SEEN_TTL", 0.0)  # outside a server nothing says who is connected: the clock does
    assert reg.users(tmp_path / "shared") == 0
    monkeypatch.setattr(sessions, "SEEN_TTL", 3600.0)
    assert reg.users(tmp_path / "shared") == 0  # gone, not just hidden


def _token_script():
    import streamlit as st

    from ui import sessions

    st.session_state["seen"] = [*st.session_state.get("seen", []), sessions.token()]


def test_token__one_per_browser_session_and_stable_across_its_reruns():
    a = AppTest.from_function(_token_script).run()
    a.run()
    b = AppTest.from_function(_token_script).run()
    first, again = a.session_state["seen"]
    assert first == again and len(first) == 32
    assert b.session_state["seen"] != [first]
