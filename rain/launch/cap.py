"""launch_max_machines: how many machines one user runs at once from `fg-image launch`, checked so that
launches started together cannot pass it together.

The machines a launch runs count from its record in the repository (rain/launch/records.py). But a launch
is recorded only once its machines are started, and before that it may fetch the disk or register the
image on a cloud for minutes. So a launch *claims* its machines before it starts anything: a file in
DATA_DIR/launch/claims naming the process (a lease, rain/clouds/leases.py) and the count. The check and
the claim are made under one lock, and so are the record and the claim's end, so a second launch counts
the first's machines exactly once, whether from its claim or its record. A claim whose process is gone
(killed before it was recorded) no longer counts, and the next check removes it.

The cap is the user's own setting, and the claims are this host's: two launches on two hosts sharing one
repository are counted from their records only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from rain.clouds.leases import Lease, Leases
from rain.errors import QuotaExceeded

T = TypeVar("T")


class Claim:
    """This launch's claim on `count` machines, until its record counts them (`recorded`) or it ends."""

    def __init__(self, directory: Path, lease: Lease) -> None:
        self.directory = directory
        self.lease: Lease | None = lease

    def recorded(self, record: Callable[[], T]) -> T:
        """Record the launch (`record` adds its record to the repository) and end the claim at once: a check
        meanwhile sees the machines in one or the other, never both."""
        with _locked(self.directory):
            made = record()
            self.drop()
        return made

    def drop(self) -> None:
        if self.lease is not None:
            self.lease.drop()
            self.lease = None


@contextlib.contextmanager
def claimed(directory: Path, count: int, cap: int, running: Callable[[], int]) -> Iterator[Claim]:
    """Claim `count` machines, refused (QuotaExceeded) if with the `running()` ones (from the records) and the
    other launches' claims they would pass `cap`; the claim ends with the block."""
    with _locked(directory):
        leases = Leases(directory)
        for stale in leases.stale():
            stale.drop()
        have = running() + sum(_count(lease) for lease in leases.live())
        if have + count > cap:
            raise QuotaExceeded(f"{count} more machine(s) would make {have + count}; launch_max_machines lets you "
                                f"run {cap} at once here", hint="stop some (`fg-image instances stop ID`), or raise "
                                                                "launch_max_machines in your settings")
        claim = Claim(directory, leases.take(f"claim-{os.getpid()}-{secrets.token_hex(4)}", count=str(count)))
    try:
        yield claim
    finally:
        claim.drop()


def _count(lease: Lease) -> int:
    count = str(lease.data.get("count", ""))
    return int(count) if count.isdigit() else 0


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
