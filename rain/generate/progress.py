"""Progress of a build: named, timed steps reported to whoever is watching.

The core calls `with reporter.step("bootstrap"):`; the CLI passes a Reporter
that renders with rich on a TTY or plain lines otherwise. Step timings end up
in the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Timing:
    step: str
    seconds: float


@dataclass
class Reporter:
    """Records step timings and forwards events to `emit(event, step, detail)`.

    event is one of "start", "done", "failed", "info".
    """

    emit: Callable[[str, str, str], None] = lambda event, step, detail: None
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
        """A reporter for one build of a batch: same sink, own timings, prefixed names."""
        return Reporter(self.emit, prefix=f"{self.prefix}{prefix}: " if prefix else self.prefix)


def plain_emitter(write: Callable[[str], None]) -> Callable[[str, str, str], None]:
    def emit(event: str, step: str, detail: str) -> None:
        if event == "start":
            write(f"… {step}")
        elif event == "done":
            write(f"✓ {step} ({detail})")
        elif event == "failed":
            write(f"✗ {step} ({detail})")
        else:
            write(f"  {step} {detail}".rstrip() if step else f"  {detail}")
    return emit
