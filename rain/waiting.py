"""Bounded waits: every "wait until X, at most T seconds" in Rain goes through here.

A `Deadline` is a point on the monotonic clock; `poll` calls a step until it
says done or the deadline passes, sleeping no further than the deadline.
`wait_for` is the same loop for a step that has a value to give back (a VM's
address) and a state to name when time runs out ("still BUILD after 600s").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """A point in time a wait must be done by (time.monotonic based)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    @property
    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def sleep(self, interval: float) -> None:
        time.sleep(min(interval, self.left))


def poll(step: Callable[[], bool], deadline: Deadline, interval: float) -> bool:
    """Call step until it returns True (→ True) or the deadline passes (→ False)."""
    while True:
        if step():
            return True
        if deadline.passed:
            return False
        deadline.sleep(interval)


@dataclass(frozen=True)
class Pending:
    """A wait step's "not yet": the state the awaited thing is in, for the timeout's message."""

    state: str


def wait_for(step: Callable[[], T | Pending], deadline: Deadline, interval: float,
             timeout: Callable[[str], Exception]) -> T:
    """Call step until it returns a value (→ that value); at the deadline raise timeout(last state).

    The step runs at least once, and once more at the deadline; an error it raises ends the wait."""
    while True:
        got = step()
        if not isinstance(got, Pending):
            return got
        if deadline.passed:
            raise timeout(got.state)
        deadline.sleep(interval)
