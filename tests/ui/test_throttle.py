"""ui/throttle.py: wrong passwords wait twice as long each time, per key, whatever the session; a clock of our own
so the test takes no time."""

from __future__ import annotations

from ui.throttle import LONGEST, Throttle, wait_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wait_after__free_then_doubling_up_to_a_minute():
    assert [wait_after(n) for n in range(1, 11)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert wait_after(1000) == LONGEST


def test_throttle__a_guesser_waits_longer_each_time_and_the_right_password_starts_afresh():
    clock = Clock()
    gate = Throttle(clock)
    me = ["session a", "address 10.0.0.7"]
    waits = []
    for _ in range(4):
        clock.now += waits[-1] if waits else 0  # each guess as soon as it may be checked
        assert gate.wait(me) == 0
        gate.wrong(me)
        waits.append(gate.wait(me))
    assert waits == [0, 0, 1, 2]
    clock.now += 2
    assert gate.wait(me) == 0
    gate.right(me)
    assert gate.wrong(me) == 1


def test_throttle__a_new_session_from_the_same_address_waits_as_well():
    clock = Clock()
    gate = Throttle(clock)
    for i in range(6):
        gate.wrong([f"session {i}", "address 10.0.0.7"])  # a fresh session per guess
    assert gate.wait(["session new", "address 10.0.0.7"]) == 8.0
    assert gate.wait(["session other", "address 10.0.0.8"]) == 0.0
