"""What a test run leaves on this host, and children a test can stop with Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/mounts): a finished build must leave none."""
    prefix = str(path.resolve())
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[1].startswith(prefix)]


def ctrl_c_works() -> None:
    """preexec_fn for a child the test will Ctrl-C: a shell without job control starts background
    jobs with SIGINT ignored (POSIX), and Python keeps that; the test run may be such a job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
