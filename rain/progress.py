"""Progress of long work: named, timed steps reported to whoever is watching.

Cross-stage, like errors.py: generate, the builders and register all call
`with reporter.step("unpack"):` and `reporter.info("...")`; the CLI passes a
Reporter whose `emit` renders (rain/cli/progress.py), everyone else gets the
quiet default. Invariants: the core never prints; every step that ends without
an exception appends one Timing, in the order the steps ended; a child shares
its parent's sink but keeps its own timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Emit = Callable[[str, str, str], None]
"""emit(event, step, detail); event is one of "start", "done", "failed", "info"."""


def _quiet(event: str, step: str, detail: str) -> None:
    """The default sink: nobody is watching."""


@dataclass
class Timing:
    step: str
    seconds: float


@dataclass
class Reporter:
    """Records step timings and forwards events to `emit(event, step, detail)`.

    "done" carries the duration ("1.2s"), "failed" the exception's type name.
    """

    emit: Emit = _quiet
    prefix: str = ""
    timings: list[Timing] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.emit("start", self.prefix + name, "")
        t0 = time.monotonic()
        try:
            yield
        except BaseException as e:
            self.emit("failed", self.prefix + name, type(e).__name__)
            raise
        dt = time.monotonic() - t0
        self.timings.append(Timing(name, round(dt, 3)))
        self.emit("done", self.prefix + name, f"{dt:.1f}s")

    def info(self, message: str) -> None:
        self.emit("info", self.prefix.rstrip(": "), message)

    def child(self, prefix: str) -> Reporter:
        """A reporter for one piece of the work (a build of a batch, one registration): same sink,
        own timings, names prefixed with `prefix: ` (none when empty)."""
        return Reporter(self.emit, prefix=f"{self.prefix}{prefix}: " if prefix else self.prefix)

    def seconds(self, digits: int = 2) -> dict[str, float]:
        """The timings as {step: seconds}, as register's outcome and records show them."""
        return {t.step: round(t.seconds, digits) for t in self.timings}
