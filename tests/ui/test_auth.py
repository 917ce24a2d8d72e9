"""ui/auth.py: the optional password in front of every page. The app is opened on a run that does not exist:
the gate stands before any run is loaded, so nothing has to be trained for these tests."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT, enter_password, leaves, open_app, page_text
from ui import auth


def test_password_gate__a_wrong_password_gets_one_line_and_nothing_else(app_without_run, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = open_app()
    assert leaves(at) == ["TextInput", "Button"]
    enter_password(at, "open sesam")
    assert not at.exception
    assert [e.value for e in at.error] == [auth.WRONG]
    assert leaves(at) == ["TextInput", "Button", "Error"]  # no title, no sidebar, no run name
    assert app_without_run.name not in page_text(at)


def test_password_gate__the_wrong_line_goes_once_the_password_is_right(app_without_run, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = enter_password(open_app(), "open sesam")
    enter_password(at, "open sesame")
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Image embedder"]


def test_password_gate__a_deep_link_asks_first_then_opens_its_page(app_without_run, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = open_app("pages/query.py")
    assert leaves(at) == ["TextInput", "Button"]
    enter_password(at, "open sesame")
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Query"]
    at.run()  # remembered for the session
    assert [t.value for t in at.title] == ["Query"]
    assert at.session_state["password"] == ""  # the typed password is not kept


def test_password_gate__a_changed_password_asks_again(app_without_run, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    at = enter_password(open_app(), "open sesame")
    assert [t.value for t in at.title] == ["Image embedder"]
    monkeypatch.setenv("EMBEDDER_PASSWORD", "new one")
    at.run()
    assert leaves(at) == ["TextInput", "Button"]


def test_password_gate__the_password_may_come_from_secrets(app_without_run):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.secrets["password"] = "from secrets"
    at.run()
    assert leaves(at) == ["TextInput", "Button"]
    enter_password(at, "from secrets")
    assert [t.value for t in at.title] == ["Image embedder"]


def test_configured_password__the_environment_wins_over_secrets(app_without_run, monkeypatch):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "from the environment")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.secrets["password"] = "from secrets"
    at.run()
    enter_password(at, "from secrets")
    assert [e.value for e in at.error] == [auth.WRONG]
    enter_password(at, "from the environment")
    assert [t.value for t in at.title] == ["Image embedder"]


def test_no_password_and_no_secrets_file_leaves_the_app_open(app_without_run):
    assert auth.configured_password() is None  # and reading st.secrets without a secrets file did not raise
    assert [t.value for t in open_app().title] == ["Image embedder"]
