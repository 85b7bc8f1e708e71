"""What a test run leaves on this host."""

from __future__ import annotations

from pathlib import Path


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/mounts): a finished build must leave none."""
    prefix = str(path.resolve())
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[1].startswith(prefix)]

