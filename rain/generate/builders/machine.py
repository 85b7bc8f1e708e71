"""What a VM builder provider gives Rain: a Machine reachable over SSH, with pinned keys.

Providers (qemu, opennebula, openstack) only *launch* and *release* machines;
everything done on a machine goes through `remote.SSHBuilder` over paramiko.

For each machine Rain makes two fresh Ed25519 key pairs (`MachineKeys`):
the client key Rain logs in with (its public half goes to the VM as root's
authorized key) and the VM's own host key (its private half goes to the VM,
its public half is pinned: a server presenting any other key is refused). The
provider hands both to the VM the way its platform does (qemu: a seed disk;
OpenNebula: CONTEXT; OpenStack: a keypair and cloud-init user-data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rain.host.ssh import MachineKeys
from rain.progress import Reporter


@dataclass(frozen=True)
class DiskChannel:
    """Two raw disk files a VM on this host shares with Rain, so image trees need not cross SSH (whose
    cipher is the slow part of an emulated VM): Rain writes a plain tar stream into `inbound` and the VM
    reads it from `inbound_device` (read-only there); the VM writes one to `outbound_device` and Rain reads
    `outbound` with the safe unpacker. Each file holds at most `size` bytes."""

    inbound: Path
    inbound_device: str
    outbound: Path
    outbound_device: str
    size: int
    base: Path | None = None
    """A third disk, read-only in the VM: Rain writes a cached base system's squashfs image into it once, and
    the VM mounts it as the lower layer of the image root (`base_device`), so the base is neither unpacked
    there nor sent back: only the build's upper layer returns, laid over the same base here."""
    base_device: str = ""


@dataclass
class Machine:
    """A running builder reachable over SSH. `release` ends it and removes what it left (idempotent)."""

    name: str
    """The provider's name for it (VM id, instance id), for messages."""
    host: str
    port: int
    keys: MachineKeys
    user: str = "root"
    console_log: Path | None = None
    release: Callable[[], None] = field(default=lambda: None)
    keep: Callable[[], str] | None = None
    """--on-error keep: leave the machine running; returns how to reach/remove it, one line."""
    disks: DiskChannel | None = None
    """A VM on this host: trees move through these disks instead of the SSH connection."""


class Provider(Protocol):
    """Launches builder machines of one kind. Settings come from the builders file."""

    name: str
    limit: int
    """At most this many machines of this provider at once (the pool honours it)."""
    def launch(self, build_name: str, keys: MachineKeys, workdir: Path, reporter: Reporter | None = None) -> Machine:
        """Start a machine and wait (bounded) until its sshd answers with keys.host.

        `reporter` is where slow one-time work (qemu's first builder image) shows.

        On any failure, delete what was started and raise a RainError
        (Unreachable, Unauthorized, BuildError) whose message names the cause.
        `workdir` is a private host directory for this machine's files, removed by the caller."""

    def reap(self) -> list[str]:
        """Delete the machines a killed fg-image left (leases.py); one line for each. launch does it first."""


if TYPE_CHECKING:  # mypy proves every provider satisfies the protocol; nothing runs at import
    from rain.generate.builders.opennebula import OpenNebulaProvider
    from rain.generate.builders.openstack import OpenStackProvider
    from rain.generate.builders.qemu import QemuProvider

    def _providers(q: QemuProvider, o: OpenNebulaProvider, s: OpenStackProvider) -> list[Provider]:
        return [q, o, s]
