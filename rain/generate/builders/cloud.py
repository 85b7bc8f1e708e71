"""What the cloud providers (opennebula, openstack) share: bounded waits and the pinned-key sshd probe.

A cloud VM is ready for Rain when its sshd presents exactly the host key Rain
generated for it and accepts Rain's client key for root. `wait_for_sshd`
probes that with paramiko until a deadline; a server that keeps presenting
another key is refused (it is not the machine Rain made, or its image does not
install the key it was given), never trusted.

`undo_on_failure` is the launch-time guard: whatever fails (or Ctrl-C) after
a VM exists deletes it before the error goes on.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko

from rain.errors import BuildError, RainError, Unreachable
from rain.generate.builders.machine import KeyPair, MachineKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deadline:
    """A point in time a launch must be done by (time.monotonic based)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    @property
    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def sleep(self, interval: float) -> None:
        time.sleep(min(interval, self.left))


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def one_line(text: object) -> str:
    """The first non-empty line of an error text, for messages that stay one line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(text).__name__


def _client_key(pair: KeyPair) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh))


def _probe(host: str, port: int, keys: MachineKeys, timeout: float) -> str | None:
    """One attempt: None when sshd shows keys.host and lets the client key in; else what went wrong.

    The answers starting with 'host key' or 'client key' mean a server answered but was not right."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return "connection refused" if isinstance(e, ConnectionRefusedError) else one_line(e.strerror or e)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
        transport.start_client(timeout=timeout)
        shown = transport.get_remote_server_key().asbytes()
        if shown != keys.host.public_blob:
            return f"host key {fingerprint(shown)}"
        try:
            transport.auth_publickey("root", _client_key(keys.client))
        except paramiko.AuthenticationException:
            return "client key refused for root"
        return None if transport.is_authenticated() else "client key refused for root"
    except (paramiko.SSHException, OSError, EOFError) as e:
        return one_line(e) or "no SSH handshake"
    finally:
        transport.close()


def wait_for_sshd(what: str, host: str, port: int, keys: MachineKeys, deadline: Deadline,
                  interval: float = 1.0) -> None:
    """Return once sshd on host:port presents keys.host and accepts keys.client for root.

    Raises Unreachable when nothing usable answered by the deadline, BuildError
    when a server answered with another host key or refused the client key."""
    problem = "not tried"
    while True:
        problem = _probe(host, port, keys, timeout=max(1.0, min(10.0, deadline.left))) or ""
        if not problem:
            return
        log.debug("%s: sshd at %s:%s not ready: %s", what, host, port, problem)
        if deadline.passed:
            break
        deadline.sleep(interval)
    at = f"{host}:{port}"
    if problem.startswith("host key"):
        raise BuildError(f"{what} at {at} presented {problem}, not the host key Rain gave it "
                         f"({fingerprint(keys.host.public_blob)})",
                         hint="the builder image must install the host key it is given at boot "
                              "(see docs/builders.md); if it does, something else answers at that address")
    if problem.startswith("client key"):
        raise BuildError(f"{what} at {at}: sshd refused Rain's client key for root",
                         hint="the builder image must allow root logins with the key it is given "
                              "(PermitRootLogin prohibit-password, cloud-init disable_root: false)")
    raise Unreachable(f"{what}: sshd at {at} did not answer within {deadline.seconds:.0f}s ({problem})",
                      hint="check that the builder image starts sshd, that this host can reach the VM's "
                           "network, and ssh_port/boot_timeout in the builders file")


def poll(step: Callable[[], bool], deadline: Deadline, interval: float) -> bool:
    """Call step until it returns True (→ True) or the deadline passes (→ False)."""
    while True:
        if step():
            return True
        if deadline.passed:
            return False
        deadline.sleep(interval)


@contextmanager
def undo_on_failure(undo: Callable[[], None], what: str) -> Iterator[None]:
    """Run undo if the block fails (also on Ctrl-C); the block's own error is what propagates."""
    try:
        yield
    except BaseException:
        try:
            undo()
        except (RainError, OSError) as e:
            log.warning("could not remove %s after the failure: %s", what, one_line(e))
        raise
