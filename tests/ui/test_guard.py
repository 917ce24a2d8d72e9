"""ui/guard.py: Streamlit's own state-changing requests (clear cache, uploads) are dropped for a session that has
not given the password. Real BackMsg protobufs through the real ``Runtime.handle_backmsg`` entry point; the
session's state is the one thing stood in for (no server is started)."""

from __future__ import annotations

import logging

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.runtime import Runtime

from ui import auth, guard


@pytest.fixture
def sessions(monkeypatch):
    """Session id -> session_state, looked up where guard looks for a Streamlit session's state."""
    states: dict[str, dict] = {}
    monkeypatch.setattr(guard, "_state_of", states.get)
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    return states


def test_let_through__clear_cache_and_uploads_wait_for_the_password(sessions, caplog):
    sessions["in"] = {auth.PASSED: auth._digest("open sesame")}
    sessions["out"] = {}
    caplog.set_level(logging.WARNING, logger="ui.guard")
    assert guard.let_through("in", "clear_cache") and guard.let_through("in", "file upload")
    assert not guard.let_through("out", "clear_cache") and not guard.let_through("out", "file_urls_request")
    assert not guard.let_through("gone", "clear_cache")  # no such session
    assert guard.let_through("out", "rerun_script")  # the password form itself must run
    assert "dropped a clear_cache request from a session without the password" in caplog.text


def test_let_through__an_open_app_lets_everything_through(monkeypatch):
    monkeypatch.delenv("EMBEDDER_PASSWORD", raising=False)
    monkeypatch.setattr(guard, "_state_of", lambda session_id: {})
    assert guard.let_through("anyone", "clear_cache")


def test_install__wraps_the_runtime_once_and_drops_a_clear_cache_unanswered(sessions, monkeypatch):
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager

    reached = []  # what reached Streamlit's handler (this stand-in; the test puts the real one back)
    monkeypatch.setattr(Runtime, "handle_backmsg", lambda self, session_id, msg, **kw: reached.append(msg))
    monkeypatch.setattr(MemoryUploadedFileManager, "add_file", MemoryUploadedFileManager.add_file)
    assert guard.install() and guard.install()  # twice: still one wrapper
    sessions["out"], sessions["in"] = {}, {auth.PASSED: auth._digest("open sesame")}
    Runtime.handle_backmsg(None, "out", BackMsg(clear_cache=True))
    assert reached == []
    Runtime.handle_backmsg(None, "in", BackMsg(clear_cache=True))
    assert [m.WhichOneof("type") for m in reached] == ["clear_cache"]
    assert not hasattr(Runtime.handle_backmsg.__wrapped__, "embedder_guard")  # wrapped once
