"""ui/auth.py: the optional password in front of every page. The app is opened on a run that does not exist:
the gate stands before any run is loaded, so nothing has to be trained for these tests."""

from __future__ import annotations

import time

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


class _Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_gate__wrong_guesses_slow_down_and_even_the_right_one_waits(app_without_run, monkeypatch, caplog):
    from ui import throttle

    clock = _Clock()
    monkeypatch.setattr(throttle, "_THROTTLE", throttle.Throttle(clock))
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    caplog.set_level("WARNING", logger="ui.auth")
    at = open_app()
    for guess in ("a", "b", "c"):
        enter_password(at, guess)
        assert [e.value for e in at.error] == [auth.WRONG]
    enter_password(at, "open sesame")  # right, but inside the second the third wrong guess earned
    assert [e.value for e in at.error] == [auth.SLOW_DOWN.format(1)]
    assert leaves(at) == ["TextInput", "Button", "Error"]
    assert "wrong password from session" in caplog.text and "3 wrong in a row" in caplog.text
    clock.now += 1
    enter_password(at, "open sesame")
    assert not at.error and [t.value for t in at.title] == ["Image embedder"]


def _blocking_job(out, owner):
    """A job in the registry that runs until it is cancelled (the registry's ``task``: what a job does)."""
    from embedder.config import TrainConfig
    from embedder.errors import Cancelled
    from ui import jobs

    def task(progress, should_stop):
        while not should_stop():
            time.sleep(0.05)
        raise Cancelled("cancelled")

    return jobs.registry().start(TrainConfig(data="demo", out=str(out)), task=task, owner=owner)


def _cancel_buttons(at) -> list[str]:
    return [b.label for b in at.button if b.label == "Cancel training"]


def test_cancel__only_the_operator_may_stop_the_servers_own_training(
    app_without_run, monkeypatch, no_job_outlives_its_test
):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    monkeypatch.setenv("EMBEDDER_OPERATOR_PASSWORD", "the operator")
    job = _blocking_job(app_without_run, owner=None)  # as app.py starts the demo's training
    visitor = enter_password(open_app(), "open sesame")
    assert "secret-project** in the background" in page_text(visitor) and _cancel_buttons(visitor) == []
    operator = enter_password(open_app(), "the operator")
    assert _cancel_buttons(operator) == ["Cancel training"]
    operator.button(key="cancel-secret-project").click().run()
    assert job.wait(30) and job.status == "cancelled"


def test_cancel__a_visitor_may_stop_a_training_it_started_and_no_other(
    app_without_run, monkeypatch, no_job_outlives_its_test
):
    monkeypatch.setenv("EMBEDDER_PASSWORD", "open sesame")
    starter, other = (enter_password(open_app(), "open sesame") for _ in range(2))
    job = _blocking_job(app_without_run, owner=starter.session_state["session_token"])
    starter.run()
    other.run()
    assert _cancel_buttons(starter) == ["Cancel training"] and _cancel_buttons(other) == []
    starter.button(key="cancel-secret-project").click().run()
    assert job.wait(30) and job.status == "cancelled"
