"""Transfer progress: a rich bar on a terminal, nothing on pipes and files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rain.cli.common import err_console


@contextmanager
def transfer(description: str, total: int, start: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields a callback to advance by n bytes."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total, completed=start)
        yield lambda n: bar.advance(task, n)
