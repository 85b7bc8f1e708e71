"""What every launch site (qemu here, a cloud) hands the job: machines reachable over SSH with pinned keys.

A site's `machines(count, key, timeout, ...)` is a context manager that starts `count` machines, calls
`started(fleet)` once they all exist (so the launch is recorded before the wait, and a Rain killed
while it waits leaves a record `instances stop` can release), waits until each shows its pinned host
key and lets the login user in, and yields the Fleet. Leaving the block releases every machine, unless
`Fleet.keep()` was called (--detach).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rain.errors import InvalidInput
from rain.host import reaper
from rain.host.ssh import KeyPair
from rain.register import seeds

MAX_COUNT = 64


@dataclass(frozen=True)
class Machine:
    name: str
    address: str
    """Its address on the launch's network, where the other machines reach it."""
    host: str
    """Where Rain reaches its sshd (127.0.0.1 for a forwarded port on this host)."""
    port: int
    host_key: KeyPair
    remote_id: str
    """The site's id for it (qemu: the pid of its process; a cloud: its server id)."""
    listed: str
    """Its line in the machines file: a name the others resolve (qemu), or its address (a cloud)."""
    console: Path | None = None
    """Its console log on this host, when there is one."""

    def where_to_look(self) -> str:
        """Where a user looks when the machine misbehaves (for an error's hint)."""
        return f"see {self.name}'s console log: {self.console}" if self.console else \
            f"see {self.name}'s console in the cloud's dashboard ({self.remote_id})"


@dataclass(frozen=True)
class Fleet:
    """A launch's machines and its directory on this host; `keep()` leaves them running past the block."""

    machines: list[Machine]
    work: Path
    """rain-launch-XXXXXXXX: the launch's key and known_hosts once recorded (records.mark)."""
    keep: Callable[[], None]
    detail: dict[str, Any] = field(default_factory=dict)
    """What the record keeps for the site to release the machines later (e.g. a key pair's name)."""
    recorded: Callable[[str], None] = lambda _: None
    """Told the record's id once the launch is recorded (records.mark): a cloud's lease names it."""


def check_count(count: int, cap: int = MAX_COUNT) -> None:
    if not 1 <= count <= cap:
        raise InvalidInput(f"--count {count}: launch 1 to {cap} machines", hint="give a smaller --count")


def work_dir() -> Path:
    """A new private rain-launch-XXXXXXXX directory, tracked by the reaper until `drop_work` or `keep_work`."""
    work = Path(tempfile.mkdtemp(prefix="rain-launch-"))
    reaper.track_path(work)
    return work


def drop_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    reaper.untrack_path(work)


def keep_work(work: Path) -> None:
    reaper.untrack_path(work)


def cloud_config(host_key: KeyPair, more: dict[str, Any] | None = None) -> str:
    """cloud-config that makes `host_key` the machine's host key, and no other; plus `more`."""
    config = {"ssh_deletekeys": True, "ssh_genkeytypes": [],
              "ssh_keys": {"ed25519_private": host_key.private_openssh,
                           "ed25519_public": seeds.public_key(host_key.public_line)}, **(more or {})}
    return "#cloud-config\n" + json.dumps(config) + "\n"
