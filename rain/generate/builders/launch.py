"""What every VM provider (qemu, opennebula, openstack) shares: the pinned-key sshd probe and launch undo.

A VM is ready for Rain when its sshd presents exactly the host key Rain
generated for it and accepts Rain's client key for root. `wait_for_sshd`
probes that with paramiko until a deadline; a server presenting another key
is refused at once (it is not the machine Rain made, or its image does not
install the key it was given), never trusted.

`undo_on_failure` is the launch-time guard: whatever fails (or Ctrl-C) after
a VM exists deletes it before the error goes on.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from rain.errors import RainError, Unauthorized, Unreachable, one_line
from rain.host.ssh import MachineKeys, client_pkey, fingerprint
from rain.waiting import Deadline, poll

log = logging.getLogger(__name__)


def _probe(what: str, host: str, port: int, keys: MachineKeys, timeout: float) -> str | None:
    """One attempt: None when sshd shows keys.host and lets the client key in; else why not yet.

    A server that answers with another host key, or refuses the client key, is not
    waited for: that is an Unauthorized at once."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return "connection refused" if isinstance(e, ConnectionRefusedError) else one_line(e.strerror or e)
    transport = None
    try:
        # a NAT or a proxy may accept and hang up until the guest's sshd listens: wait for the
        # banner quietly here, so paramiko only ever sees a server that is there
        if not sock.recv(4, socket.MSG_PEEK).startswith(b"SSH-"):
            return "no SSH banner"
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
        transport.start_client(timeout=timeout)
        shown = transport.get_remote_server_key().asbytes()
        if shown != keys.host.public_blob:
            raise Unauthorized(f"{what} at {host}:{port} presented host key {fingerprint(shown)}, "
                               f"not the host key Rain gave it ({fingerprint(keys.host.public_blob)})",
                               hint="the builder image must install the host key it is given at boot, before "
                                    "sshd starts (see docs/builders.md); if it does, something else answers there")
        try:
            transport.auth_publickey("root", client_pkey(keys.client))
        except paramiko.AuthenticationException as e:
            raise Unauthorized(f"{what} at {host}:{port}: sshd refused Rain's client key for root",
                               hint="the builder image must let root in with the key it is given "
                                    "(PermitRootLogin prohibit-password; cloud-init disable_root: false)") from e
        return None
    except (paramiko.SSHException, OSError, EOFError) as e:
        return one_line(e) or "no SSH handshake"
    finally:
        if transport is not None:
            transport.close()
        sock.close()


def wait_for_sshd(what: str, host: str, port: int, keys: MachineKeys, deadline: Deadline,
                  interval: float = 1.0, alive: Callable[[], None] | None = None, detail: str = "") -> None:
    """Return once sshd on host:port presents keys.host and accepts keys.client for root.

    Raises Unauthorized at once when a server answers with another host key or
    refuses the client key, Unreachable when nothing answered by the deadline.
    `alive` is called before each try and may raise (e.g. the VM's process died);
    `detail` (e.g. "console log: PATH") is added to the timeout message."""
    problem: str | None = None

    def answered() -> bool:
        nonlocal problem
        if alive is not None:
            alive()
        problem = _probe(what, host, port, keys, timeout=max(1.0, min(10.0, deadline.left)))
        if problem is not None:
            log.debug("%s: sshd at %s:%s not ready: %s", what, host, port, problem)
        return problem is None

    if poll(answered, deadline, interval):
        return
    extra = f"; {detail}" if detail else ""
    raise Unreachable(f"{what}: sshd at {host}:{port} did not answer within {deadline.seconds:.0f}s "
                      f"({problem}{extra})",
                      hint="check that the builder image starts sshd, that this host reaches the VM's "
                           "network, and ssh_port/boot_timeout in the builders file")


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


def kept_login(kept: Path, host: str, port: int, keys: MachineKeys) -> str:
    """For --on-error keep: write the machine's client key and pinned host key into `kept` (0700) and
    return the ssh command line that logs in to it."""
    kept.mkdir(parents=True, exist_ok=True)
    kept.chmod(0o700)
    key = kept / "client_key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.client.private_openssh)
    name = host if port == 22 else f"[{host}]:{port}"
    (kept / "known_hosts").write_text(f"{name} {' '.join(keys.host.public_line.split()[:2])}\n")
    return shlex.join(["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={kept / 'known_hosts'}",
                       "-p", str(port), f"root@{host}"])
