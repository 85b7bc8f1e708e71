"""The "VMs" of the cloud SIMULATORS: each one is a REAL OpenSSH sshd on its own loopback address.

The OpenNebula and Nova simulators cannot boot machines, so a simulated
VM is `/usr/sbin/sshd -D -e -f <its own config>` listening on 127.0.0.N:port
(a distinct loopback address per VM, port from the test's provider settings),
with the host key the cloud was given (OpenNebula CONTEXT, OpenStack user-data)
and the client public key as root's only authorized key. Commands sent to it
run on this host as root: that is the simulated VM. Terminating the VM stops
its sshd and everything started through it. Each VM has a home of its own ($HOME, and where
SFTP starts), so what a launch's job writes under ~ stays in that VM.

Faults (`VmFault`) for the providers' failure paths: the VM fails to boot,
boots but never gets an sshd, or serves a host key other than the one given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSHD = "/usr/sbin/sshd"
_addresses_lock = threading.Lock()
_addresses_in_use: set[str] = set()


class VmFault(StrEnum):
    NONE = "none"
    FAIL = "fail"
    """The VM goes to OpenNebula BOOT_FAILURE / Nova ERROR and never runs."""
    STUCK = "stuck"
    """The VM is accepted but never boots (OpenNebula PROLOG / Nova BUILD), as on a full cloud."""
    NO_SSHD = "no-sshd"
    """The VM runs and has an address, but nothing ever listens on it."""
    WRONG_HOST_KEY = "wrong-host-key"
    """sshd runs with a freshly made host key instead of the one given."""
    REFUSE_CLIENT_KEY = "refuse-client-key"
    """sshd runs with the given host key but another key as root's authorized key."""


def allocate_address() -> str:
    """A loopback address 127.0.0.N (N ≥ 2) no live simulated VM in this process holds."""
    with _addresses_lock:
        for n in range(2, 255):
            address = f"127.0.0.{n}"
            if address not in _addresses_in_use:
                _addresses_in_use.add(address)
                return address
    raise RuntimeError("no free loopback address for a simulated VM")


def release_address(address: str) -> None:
    with _addresses_lock:
        _addresses_in_use.discard(address)


def _children(pid: int) -> list[int]:
    """All live descendants of pid (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_tree(root: int) -> set[int]:
    """SIGKILL root and all its descendants and wait until they are dead. They are frozen
    (SIGSTOP) first, level by level, so none can fork a child that escapes; returns every pid."""
    frozen: set[int] = set()
    while new := {root, *_children(root)} - frozen:
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        for pid in new:  # SIGSTOP is asynchronous: until it lands, the process may still fork
            deadline = time.monotonic() + 5
            while _state(pid) not in ("T", "t", "Z", "X", "") and time.monotonic() < deadline:
                time.sleep(0.001)
        frozen |= new
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in frozen) and time.monotonic() < deadline:  # a killed process takes a moment
        time.sleep(0.005)
    return frozen


def _state(pid: int) -> str:
    """The process's state letter (R, S, T, Z, ...), or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z", "X")


@dataclass
class SshVm:
    """One simulated VM: an sshd on address:port as the VM's own sshd."""

    address: str
    port: int
    host_private_key: str
    authorized_key: str
    fault: VmFault = VmFault.NONE
    proc: subprocess.Popen[bytes] | None = None
    pids: set[int] = field(default_factory=set)
    """Every sshd-side process seen (listener and its children), to prove they are all gone."""
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        if self.fault == VmFault.NO_SSHD:
            return
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir (compiled in)
        self._dir = tempfile.TemporaryDirectory(prefix=f"sshvm-{self.address}-")
        d = Path(self._dir.name)
        key = self.host_private_key
        if self.fault == VmFault.WRONG_HOST_KEY:
            key = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()).decode()
        (d / "host_key").write_text(key if key.endswith("\n") else key + "\n")
        (d / "host_key").chmod(0o600)
        authorized = self.authorized_key.strip()
        if self.fault == VmFault.REFUSE_CLIENT_KEY:
            authorized = Ed25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        (d / "authorized_keys").write_text(authorized + "\n")
        (d / "home").mkdir()
        (d / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {d / 'host_key'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"PidFile {d / 'sshd.pid'}",
            "StrictModes no", "PermitRootLogin prohibit-password", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "LogLevel ERROR",
            # the VM's own home: $HOME and where SFTP starts (a shell still starts in the host user's home)
            f"SetEnv HOME={d / 'home'}", f"Subsystem sftp internal-sftp -d {d / 'home'}", ""]))
        with open(d / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.pids.add(self.proc.pid)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulated VM sshd exited {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"simulated VM sshd on {self.address}:{self.port} did not listen: {self.log()}")

    def log(self) -> str:
        path = Path(self._dir.name) / "sshd.log" if self._dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Power off: the sshd and everything started through it end."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.pids.update(_kill_tree(self.proc.pid))
            self.proc.wait(10)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        release_address(self.address)

    def leftover(self) -> list[int]:
        """Processes of this VM's sshd still alive (should be none once stopped)."""
        return sorted(pid for pid in self.pids if _alive(pid))
