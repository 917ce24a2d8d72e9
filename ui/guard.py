"""Server requests that change state, held behind the password even where no page of ours runs.

Streamlit's server accepts some requests from any connected browser whatever our pages say: "clear cache" (which
empties every session's caches: the menu hides it in viewer mode, the server does not check), upload URLs and
the uploads themselves (kept in server memory), and backend operations. A browser that has not given the password
gets none of them: the request is dropped and logged. ``install`` wraps the two entry points once per process,
``Runtime.handle_backmsg`` and the upload manager's ``add_file``; where a Streamlit version lacks them it logs
that it could not, and the app still asks for the password on every page.
"""

from __future__ import annotations

import functools
import logging

from . import auth

# What a browser may send before the password: run the script (the password form), keep the connection alive,
# stop its own run, ask for git information of the app (read only).
OPEN_MESSAGES = frozenset({"rerun_script", "app_heartbeat", "stop_script", "load_git_info"})
log = logging.getLogger(__name__)


def _state_of(session_id: str):
    """The session_state of Streamlit session ``session_id``, or None when there is no such session."""
    from streamlit.runtime import Runtime

    session = Runtime.instance().get_app_session(session_id) if Runtime.exists() else None
    return session.session_state if session is not None else None


def let_through(session_id: str, what: str) -> bool:
    """Whether a request of kind ``what`` from session ``session_id`` may reach Streamlit; logs a refusal."""
    if what in OPEN_MESSAGES:
        return True
    state = _state_of(session_id)
    if state is not None and auth.allowed_state(state):
        return True
    log.warning("dropped a %s request from a session without the password", what)
    return False


def _guard_backmsg(handle):
    @functools.wraps(handle)
    def handle_backmsg(self, session_id: str, msg, *args, **kwargs) -> None:
        if let_through(session_id, msg.WhichOneof("type") or ""):
            handle(self, session_id, msg, *args, **kwargs)

    handle_backmsg.embedder_guard = True
    return handle_backmsg


def _guard_upload(add_file):
    @functools.wraps(add_file)
    def guarded_add_file(self, session_id: str, file) -> None:
        if not let_through(session_id, "file upload"):
            raise PermissionError("the password comes first")  # the upload route answers with an error
        add_file(self, session_id, file)

    guarded_add_file.embedder_guard = True
    return guarded_add_file


def install() -> bool:
    """Wrap Streamlit's entry points (once per process); False where this Streamlit lacks them."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    except ImportError:
        log.warning("could not hold Streamlit's clear-cache and upload requests behind the password")
        return False
    if not getattr(Runtime.handle_backmsg, "embedder_guard", False):
        Runtime.handle_backmsg = _guard_backmsg(Runtime.handle_backmsg)
    if not getattr(MemoryUploadedFileManager.add_file, "embedder_guard", False):
        MemoryUploadedFileManager.add_file = _guard_upload(MemoryUploadedFileManager.add_file)
    return True
