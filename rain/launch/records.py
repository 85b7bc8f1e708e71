"""A launch's record in the repository, and what it may make Rain do to this host.

A record is written by `fg-image launch` but stored where its owner can rewrite it (the service's
API takes any well-formed record), and an administrator may stop anyone's. So nothing in a record is
trusted to name a process or a path. `instances stop` kills and removes only what the launch itself
made and marked:

- its directory: an absolute `rain-launch-XXXXXXXX` directory (not a link) owned by this user,
  holding `launch.json` with the record's own id (written by the launch as soon as it is recorded);
- its processes: a pid of 1 to 10 digits whose process belongs to this user, runs qemu-system, and
  has a disk (or, a netbooting node, its TFTP directory) under exactly that directory;
- its console logs: a `DATE-TIME-XXXX` directory (not a link) directly under DATA_DIR/launch/logs.

A record that fails these checks is only forgotten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rain.errors import Forbidden
from rain.host.ssh import KeyPair
from rain.repository.models import Image, Launch, LaunchedMachine, LaunchIn

if TYPE_CHECKING:  # the CLI reads records for every `instances` command; QEMU and SSH code load with a launch
    from rain.launch.fleet import Fleet

PID_RE = re.compile(r"^[1-9][0-9]{0,9}$")
WORK_RE = re.compile(r"^rain-launch-[A-Za-z0-9_]{8}$")
LOGS_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[A-Za-z0-9_]{8}$")
MARK = "launch.json"
KEY = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
LOCAL_TARGETS = ("qemu", "hpc")
"""Targets whose launched machines are QEMU processes on the launching host (hpc: its local nodes)."""


def known_host(names: list[str], host_key: KeyPair) -> str:
    """A known_hosts line: the machine's pinned host key under each of its names."""
    return f"{','.join(names)} {' '.join(host_key.public_line.split()[:2])}\n"


def launch_in(image: Image, target: str, site: str, login: str, host: str, fleet: Fleet, lifetime: int) -> LaunchIn:
    return LaunchIn(image=image.id, target=target, site=site, host=host, user=login,
                    expires=datetime.now(UTC) + timedelta(seconds=lifetime),
                    machines=[LaunchedMachine(name=m.name, address=m.address, ssh_host=m.host, ssh_port=m.port,
                                              remote_id=m.remote_id) for m in fleet.machines],
                    detail={"work": str(fleet.work), **fleet.detail})


def mark(fleet: Fleet, launch: Launch, key: KeyPair) -> None:
    """The launch's directory (and a cloud launch's lease) says which record it is, and the directory holds
    what `ssh` needs to reach the machines."""
    (fleet.work / MARK).write_text(json.dumps({"id": launch.id}) + "\n")
    fleet.recorded(launch.id)
    private = fleet.work / KEY
    with open(os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(key.private_openssh)
    (fleet.work / KNOWN_HOSTS).write_text("".join(known_host([_ssh_name(m.host, m.port)], m.host_key)
                                                  for m in fleet.machines))


def _ssh_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def ssh_command(fleet: Fleet, login: str) -> str:
    """How to log in to the head: with the launch's key only, and its pinned host key."""
    head = fleet.machines[0]
    return (f"ssh -i {fleet.work / KEY} -o IdentitiesOnly=yes -o UserKnownHostsFile={fleet.work / KNOWN_HOSTS} "
            f"-p {head.port} {login}@{head.host}")


def launch_dir(launch: Launch) -> Path | None:
    """The launch's own directory on this host, if the record names one it made and marked."""
    work = Path(str(launch.detail.get("work", "")))
    if not work.is_absolute() or not WORK_RE.match(work.name):
        return None
    try:
        info = os.lstat(work)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        marked = json.loads((work / MARK).read_text())
    except (OSError, ValueError):
        return None
    return work if isinstance(marked, dict) and marked.get("id") == launch.id else None


def logs_dir(launch: Launch, root: Path) -> Path | None:
    """The launch's console logs, if the record names a directory directly under `root` (DATA_DIR/launch/logs)."""
    logs = launch.detail.get("logs")
    if not isinstance(logs, str):
        return None
    path = Path(logs)
    if path.parent != root or not LOGS_RE.match(path.name) or path.is_symlink() or not path.is_dir():
        return None
    return path


def pids(launch: Launch) -> list[int]:
    """A local launch's processes (a cloud's machines are not processes here)."""
    if launch.target not in LOCAL_TARGETS:
        return []
    return [int(m.remote_id) for m in launch.machines if PID_RE.match(m.remote_id)]


def running(pid: int, work: Path) -> bool:
    """Whether `pid` is this user's QEMU (or its `timeout`) with a disk in `work`: a machine of that launch,
    not a process that reused the number."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    ours = (b"file=" + bytes(work) + b"/", b"tftp=" + bytes(work) + b"/")  # its disk, or a netbooting node's TFTP
    return any(arg.startswith(ours[0]) or b"," + ours[1] in arg for arg in argv) and \
        any(b"qemu-system" in arg for arg in argv)


def alive(launch: Launch) -> int:
    """How many of a launch's machines run on this host now."""
    work = launch_dir(launch)
    return 0 if work is None else sum(running(pid, work) for pid in pids(launch))


def release(launch: Launch, logs_root: Path) -> int:
    """Kill the launch's machines and remove its files, as far as the checks above allow; how many ran."""
    killed = 0
    work = launch_dir(launch)
    if work is not None:
        for pid in pids(launch):
            if running(pid, work):
                try:
                    os.killpg(pid, signal.SIGKILL)  # its session: QEMU and the timeout around it
                except ProcessLookupError:
                    continue
                except PermissionError:
                    raise Forbidden(f"may not stop process {pid} of launch {launch.id}",
                                    hint="stop it as the user who launched it") from None
                killed += 1
        shutil.rmtree(work, ignore_errors=True)
    logs = logs_dir(launch, logs_root)
    if logs is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(logs)
    return killed
