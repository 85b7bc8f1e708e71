"""How progress looks: every long-running command renders its steps and transfers here.

One look for all of them, on stderr only (stdout carries the result, e.g. --json):

    … step            when a step starts
    ✓ step (1.2s)     when it ends
    ✗ step (Error)    when it fails (the error line follows)
      step detail     an info line

On a terminal the marks are coloured by rich and a byte stream shows a bar with
rate and ETA while it runs; on a pipe or file the same lines are plain text.
Step names and details quote recipe values and tool output: they are shown as
text (no markup, no control characters) either way. A transfer prints only its
end line: while it runs the bar is the start mark, and a failure is the error line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rain.cli import common
from rain.cli.untrusted import markup, visible
from rain.progress import Emit, Reporter

MARKS = {"start": "…", "done": "✓", "failed": "✗", "info": " "}
COLOURS = {"start": "cyan", "done": "green", "failed": "red"}


def plain_line(event: str, step: str, detail: str) -> str:
    """One event as a line of text, the form a pipe receives."""
    if event == "info":
        return f"  {visible(step)} {visible(detail)}".rstrip() if step else f"  {visible(detail)}"
    tail = f" ({visible(detail)})" if detail else ""
    return f"{MARKS[event]} {visible(step)}{tail}"


def rich_line(event: str, step: str, detail: str) -> str:
    """The same line as rich markup for a terminal: coloured mark, dimmed detail, values escaped."""
    if event == "info":
        return f"  {markup(step)} {markup(detail)}".rstrip() if step else f"  {markup(detail)}"
    tail = f" [dim]({markup(detail)})[/dim]" if detail else ""
    colour = COLOURS[event]
    return f"[{colour}]{MARKS[event]}[/{colour}] {markup(step)}{tail}"


def emitter(console: Console | None = None) -> Emit:
    """A sink for Reporter events: rich lines on a terminal, plain lines otherwise (default: stderr)."""
    out = console or common.err_console

    def emit(event: str, step: str, detail: str) -> None:
        if out.is_terminal:
            out.print(rich_line(event, step, detail), highlight=False)
        else:
            out.file.write(plain_line(event, step, detail) + "\n")
            out.file.flush()
    return emit


def step_reporter(console: Console | None = None) -> Reporter:
    """The Reporter every command passes to the core (generate, batch, builder image, register, vet)."""
    return Reporter(emitter(console))


@contextmanager
def transfer(description: str, total: int, start: int = 0,
             console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """Yields a callback to advance by n bytes; `description` (e.g. "upload NAME") is text, not markup.
    A bar with rate and ETA while it runs on a terminal; `✓ description (1.2s)` when it ends, everywhere."""
    out = console or common.err_console
    t0 = time.monotonic()
    if out.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=out, transient=True) as bar:
            task = bar.add_task(markup(description), total=total, completed=start)
            yield lambda n: bar.advance(task, n)
    else:
        yield lambda n: None
    emitter(out)("done", description, f"{time.monotonic() - t0:.1f}s")
