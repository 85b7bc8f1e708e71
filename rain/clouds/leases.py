"""Leases: the cloud machines a running `fg-image` holds (a builder VM, a launch's machines), so that a
killed one's are deleted later.

Rain's watcher (rain/host/reaper.py) kills a SIGKILLed `fg-image`'s qemu VMs, but it holds no cloud
credentials and so cannot delete a cloud VM itself. Instead Rain takes a lease before it creates
anything, a file `<name>.json` in a directory of DATA_DIR (builders/<provider>/leases, launch/leases)
naming the process that owns the machines (its pid with the pid's start time, so a reused pid is not
taken for the owner, and this host's name) and, as each is made, the cloud's ids of what was created.
Releasing the machines removes the lease, and so does keeping them (`--on-error keep`, `launch
--detach`: they are the user's then). A lease whose process is gone is *stale*:
- a cloud builder's: the watcher runs `fg-image builder reap PROVIDER` as soon as the killed fg-image is
  gone, and the next launch by that provider (a build, a batch, `fg-image builder check`) and `fg-image
  builder reap` do it too, with the credentials of the builders file;
- a launch's: the watcher runs `fg-image instances reap` as soon as the killed fg-image is gone, and the
  next launch and `fg-image instances reap` do it too (launch/cloud.py).
The watcher is told once while the process holds any lease of a directory (`Reap`), and told to forget
it when the last is dropped.
A launch's claim on machines against launch_max_machines is a lease too (launch/claims, rain/launch/cap.py):
it counts while its process runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rain.errors import RainError, one_line
from rain.host import reaper


@dataclass(frozen=True)
class Reap:
    """The command that releases a directory's stale leases (`fg-image instances reap`, `builder reap`), which
    Rain's watcher runs should this process die holding one; `env`: what it needs besides this process's
    environment; `log`: where what it did is written (nobody watches the watcher)."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    log: Path | None = None


_reap_lock = threading.Lock()
_holding: dict[Reap, int] = {}  # leases this process holds, by their reap: the watcher is told once


def _hold(reap: Reap, by: int) -> None:
    with _reap_lock:
        before = _holding.get(reap, 0)
        _holding[reap] = after = max(0, before + by)
        if before == 0 and after > 0:
            reaper.track_command(list(reap.argv), dict(reap.env), reap.log)
        elif before > 0 and after == 0:
            reaper.untrack_command(list(reap.argv), dict(reap.env), reap.log)


@dataclass
class Lease:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    reap: Reap | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.path.stem))

    @property
    def ids(self) -> dict[str, str]:
        """What was made, by kind (server, keypair, vm): the cloud's id or name of each."""
        return {str(k): str(v) for k, v in (self.data.get("ids") or {}).items()}

    def record(self, **ids: str) -> None:
        """Add ids of what was made (or is about to be: deleting what does not exist is harmless)."""
        self.data["ids"] = {**self.ids, **ids}
        self._write()

    def drop(self) -> None:
        """The machines are released, or the user's now: nothing left to reap (idempotent)."""
        self.path.unlink(missing_ok=True)
        if self.reap is not None:
            reap, self.reap = self.reap, None
            _hold(reap, -1)

    def owner(self) -> str:
        return f"fg-image pid {self.data.get('pid')} on {self.data.get('host')}"

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data) + "\n")
        os.replace(tmp, self.path)


class Leases:
    def __init__(self, directory: Path, reap: Reap | None = None) -> None:
        """`reap`: what the watcher runs should this process die holding a lease taken here."""
        self.directory = directory
        self.reap = reap

    def take(self, name: str, **about: str) -> Lease:
        """A lease on machine(s) `name` for this process, written before anything is created; `about` says
        what the reaping needs to know besides the ids (e.g. the target and site)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lease = Lease(self.directory / f"{name}.json", {
            **about, "name": name, "pid": os.getpid(), "started": _started(os.getpid()),
            "host": socket.gethostname(), "created": time.time(), "ids": {}})
        lease._write()
        if self.reap is not None:
            _hold(self.reap, +1)
            lease.reap = self.reap
        return lease

    def stale(self) -> list[Lease]:
        """Leases of this host whose process is gone (a lease that cannot be read is stale too)."""
        return [lease for lease, alive in self._read() if alive is False]

    def live(self) -> list[Lease]:
        """Leases of this host whose process still runs."""
        return [lease for lease, alive in self._read() if alive]

    def _read(self) -> list[tuple[Lease, bool | None]]:
        """Each lease, and whether its owner runs (None: another host's, whose processes cannot be seen)."""
        if not self.directory.is_dir():
            return []
        out: list[tuple[Lease, bool | None]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                out.append((Lease(path, {}), False))
                continue
            if data.get("host") != socket.gethostname():
                out.append((Lease(path, data), None))  # a data dir shared with another host
                continue
            pid = data.get("pid")
            out.append((Lease(path, data), isinstance(pid, int) and pid > 0 and _started(pid) == data.get("started")))
        return out


def _started(pid: int) -> str | None:
    """When process pid started (clock ticks since boot, /proc/PID/stat field 22); None if there is no
    such process, or it is a zombie (killed, its parent has not yet waited for it: it holds nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else fields[19]


def reap(leases: Leases, release: Callable[[Lease], str], failed: Callable[[Lease, str], str]) -> list[str]:
    """Release what each stale lease names: release(lease) does it and says what it did. A lease whose
    release fails (a RainError) stays, for the next try, and failed(lease, why) says so. One line each."""
    lines = []
    for lease in leases.stale():
        try:
            done = release(lease)
        except RainError as e:
            lines.append(failed(lease, one_line(e.message)))
            continue
        lease.drop()
        lines.append(done)
    return lines


def build_leases(data_path: Path, provider: str) -> Leases:
    """A cloud builder's leases (DATA_DIR/builders/PROVIDER/leases): should fg-image die holding one, the
    watcher runs `fg-image builder reap PROVIDER`, and writes what it did to the reap.log beside them."""
    home = data_path / "builders" / provider
    return Leases(home / "leases", Reap((sys.executable, "-m", "rain.cli", "builder", "reap", provider),
                                        log=home / "reap.log"))


def reap_builds(leases: Leases, provider: str, release: Callable[[dict[str, str]], None]) -> list[str]:
    """A cloud builder's stale leases: delete what each names with release(ids)."""
    def what(lease: Lease) -> str:
        return ", ".join(f"{kind} {value}" for kind, value in lease.ids.items()) or "nothing (none was made yet)"

    def done(lease: Lease) -> str:
        release(lease.ids)
        return f"deleted {provider} {what(lease)} left by build {lease.name}: its {lease.owner()} is gone"
    return reap(leases, done, lambda lease, why: f"could not delete {provider} {what(lease)} of build {lease.name}: "
                                                 f"{why}")
