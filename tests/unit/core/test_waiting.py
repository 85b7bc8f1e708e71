"""Bounded waits: a wait ends when its step is done, and never later than its deadline."""

from __future__ import annotations

import time

import pytest

from rain.errors import TargetError
from rain.waiting import Deadline, Pending, poll, wait_for


def test_a_wait_whose_step_is_done_returns_at_once() -> None:
    start = time.monotonic()
    assert poll(lambda: True, Deadline.after(30), 10) is True
    assert time.monotonic() - start < 1


def test_a_wait_that_never_succeeds_gives_up_at_its_deadline_not_a_whole_interval_later() -> None:
    calls: list[float] = []
    start = time.monotonic()
    done = poll(lambda: bool(calls.append(time.monotonic())), Deadline.after(0.3), 10)
    assert done is False
    assert 0.3 <= time.monotonic() - start < 2
    assert len(calls) == 2  # once at the start, once more at the deadline


def test_a_wait_succeeds_on_the_try_that_sees_the_thing_done() -> None:
    tries: list[int] = []

    def third_time() -> bool:
        tries.append(1)
        return len(tries) == 3

    assert poll(third_time, Deadline.after(30), 0.01) is True
    assert len(tries) == 3


def test_a_step_that_fails_ends_the_wait_with_its_own_error() -> None:
    def broken() -> bool:
        raise TargetError("the VM stopped")

    with pytest.raises(TargetError, match="the VM stopped"):
        poll(broken, Deadline.after(30), 1)


def test_a_deadline_says_how_long_it_was_set_for_and_how_much_is_left() -> None:
    deadline = Deadline.after(60)
    assert deadline.seconds == 60 and 59 < deadline.left <= 60 and not deadline.passed
    assert Deadline.after(0).passed and Deadline.after(0).left == 0


def test_wait_for_returns_the_value_of_the_step_that_is_done() -> None:
    states = iter([Pending("BUILD"), Pending("BUILD"), "10.0.0.7"])
    assert wait_for(lambda: next(states), Deadline.after(30), 0.01, TargetError) == "10.0.0.7"


def test_wait_for_names_the_last_state_seen_when_time_runs_out() -> None:
    calls: list[int] = []

    def still_booting() -> Pending:
        calls.append(1)
        return Pending(f"BOOT#{len(calls)}")

    with pytest.raises(TargetError) as e:
        wait_for(still_booting, Deadline.after(0.2), 0.05, lambda state: TargetError(f"still {state} after 0.2s"))
    assert len(calls) >= 2 and str(e.value) == f"still BOOT#{len(calls)} after 0.2s"
