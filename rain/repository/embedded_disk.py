"""The embedded database's disk: keep uploads from filling it, and name it when it is full.

When WiredTiger cannot write (ENOSPC) it panics: from then on SecantusDB answers
`ping` but fails every other request, reads included, with a bare "internal
server error". Freeing space alone does not bring it back; it needs a restart,
and the restart replays its journal, which needs room of its own. So Rain
refuses an upload that would leave less than RESERVE free, and when the
database fails it looks at the disk and the server log to say why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rain.errors import RainError, StorageError, Unreachable
from rain.sizes import human

MiB = 1024 * 1024
# Below this much free space the embedded database is at risk: its journal files alone are 10 MiB each.
RESERVE = 64 * MiB
NO_SPACE = ("No space left on device", "ENOSPC")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def needed_for(size: int) -> int:
    """Room an upload of `size` bytes needs: the bytes go to the journal and to the data file, then the reserve."""
    return 2 * size + RESERVE


def log_says_full(log: Path, since: int = 0, tail: int = 256 * 1024) -> bool:
    """Whether the server log, from offset `since` (where the running server's lines start), reports a write
    that failed for want of space."""
    try:
        with open(log, "rb") as f:
            f.seek(max(since, log.stat().st_size - tail))
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in NO_SPACE)


def recovery_hint(data_dir: Path) -> str:
    return (f"free space on the file system of {data_dir} (keep at least {human(RESERVE)} free), then run "
            "`fg-image repo stop`: the next fg-image command restarts the database, which then recovers")


def disk_full(data_dir: Path) -> StorageError:
    free = human(free_bytes(data_dir), none="unknown")
    return StorageError(f"the embedded repository database's disk is full ({free} free "
                       f"in {data_dir})", hint=recovery_hint(data_dir))


def require_room(data_dir: Path, size: int) -> None:
    """Refuse, before anything is stored, an upload the disk cannot take without filling up."""
    free, need = free_bytes(data_dir), needed_for(size)
    if free is not None and free < need:
        raise StorageError(f"not enough disk space for this upload: it needs {human(need)} free in {data_dir}, "
                          f"there are {human(free)}",
                          hint=f"free space on that file system (Rain keeps {human(RESERVE)} in reserve so "
                               "the database never fills its disk), then upload again")


def is_full(data_dir: Path, log: Path, since: int = 0) -> bool:
    free = free_bytes(data_dir)
    return (free is not None and free < RESERVE) or log_says_full(log, since)


def explain_failure(data_dir: Path, log: Path, since: int, what: str) -> RainError:
    """The error for an embedded database that failed a request: disk full if the disk or its log says so."""
    if is_full(data_dir, log, since):
        return disk_full(data_dir)
    return Unreachable(f"the embedded repository database failed: {what}",
                       hint=f"see {log}; `fg-image repo stop` and run the command again to restart it")


def state(data_dir: Path, log: Path, since: int, failure: str | None) -> str:
    """One word or phrase for `repo status`: ok, low on space, disk full, or the failure."""
    if failure is not None:
        return "disk full" if is_full(data_dir, log, since) else f"failing: {failure}"
    free = free_bytes(data_dir)
    if free is not None and free < RESERVE:
        return "low on disk space"
    return "ok"
