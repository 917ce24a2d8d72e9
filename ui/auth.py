"""An optional shared password in front of every page, and who may stop a training.

Environment:
    EMBEDDER_PASSWORD           the password; when it is not set, ``password = "…"`` in .streamlit/secrets.toml
                                is used. Neither set: the app is open, as before.
    EMBEDDER_OPERATOR_PASSWORD  optional: a second password that also lets a session in, as the server's operator,
                                who may cancel any training (the demo's included); others cancel only their own.

The password is asked once per browser session; a session remembers a hash of the password it was let in with,
so changing the password asks everyone again. Wrong attempts are logged with the client's address and slow down
per session and per address (throttle.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

import streamlit as st

from .throttle import throttle

PASSWORD_ENV = "EMBEDDER_PASSWORD"
OPERATOR_ENV = "EMBEDDER_OPERATOR_PASSWORD"
PASSED = "password_passed"  # session_state: sha256 of the password this session was let in with
WRONG = "Wrong password."
SLOW_DOWN = "Too many wrong passwords: try again in {:.0f} s."
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


def operator_password() -> str | None:
    return os.environ.get(OPERATOR_ENV) or None


def allowed() -> bool:
    """Whether this session may see the app."""
    return allowed_state(st.session_state)


def allowed_state(state) -> bool:
    """Whether the session whose session_state is ``state`` may see the app (and change the server's state: also
    asked of messages that reach the server outside any page, guard.py)."""
    password = configured_password()
    if password is None:
        return True
    try:
        passed = state[PASSED] if PASSED in state else ""  # noqa: SIM401  (Streamlit's own SessionState has no .get)
    except (KeyError, TypeError):
        passed = ""
    return any(hmac.compare_digest(passed, _digest(p)) for p in (password, operator_password()) if p)


def is_operator() -> bool:
    """The server's operator: in an open app, whoever uses it; behind a password, a session let in with
    ``EMBEDDER_OPERATOR_PASSWORD``."""
    if configured_password() is None:
        return True
    operator = operator_password()
    return bool(operator) and hmac.compare_digest(st.session_state.get(PASSED, ""), _digest(operator))


def may_cancel(job) -> bool:
    """Whether this session may cancel ``job`` (a ``jobs.TrainJob``): the session that started it, or the
    operator; the server's own trainings (the demo's: no session started them) only the operator."""
    from . import sessions

    return is_operator() or (job.owner is not None and hmac.compare_digest(job.owner, sessions.token()))


def ask() -> None:
    """The password form, and nothing else (the answer is checked in a callback, before the next run)."""
    with st.form("password_form"):
        st.text_input("Password", type="password", key=TYPED)
        st.form_submit_button("Enter", key="password_enter", type="primary", on_click=_check)
    message = st.session_state.pop(WRONG_FLAG, None)
    if message:
        st.error(message if isinstance(message, str) else WRONG)


def _check() -> None:
    """Let the session in on the right password. A callback, so the answer holds even when the run it triggers
    starts with a page that sends this session back through app.py (state.require_app). An attempt inside the
    wait its session or address has earned is refused unchecked."""
    typed = st.session_state.get(TYPED, "")
    st.session_state[TYPED] = ""  # the typed text does not stay in the session
    keys, gate = _keys(), throttle()
    wait = gate.wait(keys)
    if wait > 0:
        log.warning("password attempt from %s refused unchecked: %.0f s of its wait left", _who(keys), wait)
        st.session_state[WRONG_FLAG] = SLOW_DOWN.format(max(1, wait))
        return
    right = [p for p in (configured_password(), operator_password()) if p and _same(typed, p)]
    if right:
        gate.right(keys)
        st.session_state[PASSED] = _digest(right[-1])  # the operator's, when both match
        return
    wrong = gate.wrong(keys)
    log.warning("wrong password from %s: %d wrong in a row", _who(keys), wrong)
    st.session_state[WRONG_FLAG] = WRONG


def _who(keys: list[str]) -> str:
    """The keys for the log: the address, and the session by the end of its token only."""
    return ", ".join(k[:16] if k.startswith("session") else k for k in reversed(keys))


def _same(typed: str, password: str) -> bool:
    return hmac.compare_digest(typed.encode(), password.encode())


def _keys() -> list[str]:
    """Who is guessing: this browser session, and the client's address when the server knows it (behind a
    reverse proxy, the proxy's)."""
    from . import sessions

    address = getattr(st.context, "ip_address", None)
    known = isinstance(address, str) and address  # a test harness may answer with a stand-in object
    return [f"session {sessions.token()}", *([f"address {address}"] if known else [])]
