"""An optional shared password in front of every page.

Environment:
    EMBEDDER_PASSWORD  the password; when it is not set, ``password = "…"`` in .streamlit/secrets.toml is used.
                       Neither set: the app is open, as before.

The password is asked once per browser session; a session remembers a hash of the password it was let in with,
so changing the password asks everyone again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

import streamlit as st

PASSWORD_ENV = "EMBEDDER_PASSWORD"
PASSED = "password_passed"  # session_state: sha256 of the password this session was let in with
WRONG = "Wrong password."
TYPED = "password"  # session_state: the password field
WRONG_FLAG = "password_wrong"  # session_state: the last answer was wrong (shown once)

log = logging.getLogger(__name__)


def configured_password() -> str | None:
    """The password the operator set, or None for an open app."""
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    # load_if_toml_exists answers False (instead of raising) when there is no secrets file.
    if st.secrets.load_if_toml_exists() and "password" in st.secrets:
        return str(st.secrets["password"]) or None
    return None


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def allowed() -> bool:
    """Whether this session may see the app."""
    password = configured_password()
    if password is None:
        return True
    return hmac.compare_digest(st.session_state.get(PASSED, ""), _digest(password))


def ask() -> None:
    """The password form, and nothing else (the answer is checked in a callback, before the next run)."""
    with st.form("password_form"):
        st.text_input("Password", type="password", key=TYPED)
        st.form_submit_button("Enter", key="password_enter", type="primary", on_click=_check)
    if st.session_state.pop(WRONG_FLAG, False):
        st.error(WRONG)


def _check() -> None:
    """Let the session in on the right password. A callback, so the answer holds even when the run it triggers
    starts with a page that sends this session back through app.py (state.require_app)."""
    typed, password = st.session_state.get(TYPED, ""), configured_password() or ""
    st.session_state[TYPED] = ""  # the typed text does not stay in the session
    if password and hmac.compare_digest(typed.encode(), password.encode()):
        st.session_state[PASSED] = _digest(password)
    else:
        log.warning("wrong password entered")
        st.session_state[WRONG_FLAG] = True
