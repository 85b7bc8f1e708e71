"""Bounded waits: every "wait until X, at most T seconds" in Rain goes through here.

A `Deadline` is a point on the monotonic clock; `poll` calls a step until it
says done or the deadline passes, sleeping no further than the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


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
