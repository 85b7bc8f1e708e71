"""The Target interface, the lazy table of targets (owned by TargetName), and shared target pieces.

`TargetName.load()` imports a target's module only when it is asked for. A target
class is built from its validated site section (`site_model`) by `open_target`
in sites.py, which relies on the constructor the protocol declares.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, cast, runtime_checkable

from rain.image.disk import make_disk
from rain.image.formats import to_qcow2
from rain.plugins import choice, load_class
from rain.register.models import Label, Packed, VetPolicy
from rain.settings_file import Credentials

if TYPE_CHECKING:
    from rain.config import Settings
    from rain.register.chroot import Sandbox


class TargetName(StrEnum):
    HPC = "hpc"
    OPENNEBULA = "opennebula"
    OPENSTACK = "openstack"
    EC2 = "ec2"

    def load(self) -> type[Target]:
        """This target's class (its module is imported now, not at start-up)."""
        return cast("type[Target]", load_class(TARGETS[self]))


TARGETS: dict[TargetName, str] = {
    TargetName.HPC: "rain.register.targets.hpc:HpcTarget",
    TargetName.OPENNEBULA: "rain.register.targets.opennebula:OpenNebulaTarget",
    TargetName.OPENSTACK: "rain.register.targets.openstack:OpenStackTarget",
    TargetName.EC2: "rain.register.targets.ec2:Ec2Target",
}


class Target(Protocol):
    """One infrastructure an image can be registered on.

    adapt and pack work on local files only; publish is the one step that talks
    to the site, and delete undoes it (also for a partial publish)."""

    name: ClassVar[TargetName]
    vet_policy: ClassVar[VetPolicy]
    derived_format: ClassVar[str]
    """Format of the derived image stored back in the repository (the packed primary file)."""
    login_user: ClassVar[str]
    """Who logs in with the key the target hands over at boot (what adapt's contextualization sets up)."""
    site_model: ClassVar[type[SiteSettings]]
    """The model of one site's section of the targets file."""

    def __init__(self, site: SiteSettings, site_name: str, settings: Settings, offline: bool = False) -> None:
        """A target for one validated site; offline (`register --output`) reads no secrets."""

    def adapt(self, root: Path, sandbox: Sandbox) -> list[str]:
        """Change the unpacked copy at `root` for this target; return what was changed, one line each.
        Whatever runs the image's own programs runs in `sandbox` (a builder VM unless the site says local)."""

    def pack(self, root: Path, out: Path) -> Packed:
        """Write the target's files for `root` into the directory `out`."""

    def publish(self, packed: Packed, label: Label) -> str:
        """Send the packed files to the site; return the remote id. Deletes what it made if it fails."""

    def delete(self, remote_id: str) -> None:
        """Remove a published image from the site (missing counts as removed)."""


@runtime_checkable
class BootTestable(Protocol):
    """Targets whose packed files can be booted on this host to prove they work."""

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None: ...


@runtime_checkable
class Preflight(Protocol):
    """Targets that can check, before any work, that publishing will be possible (log in, find the API)."""

    def preflight(self) -> None: ...


@runtime_checkable
class Shares(Protocol):
    """Targets that can share a published image with other projects (its members)."""

    def add_member(self, project: str) -> None:
        """Share every image published from now on with `project`; ValueError names a bad project."""


Firmware = Literal["bios", "uefi"]
"""How the site boots instances: a site setting (`firmware:`), published with the image."""


class SiteSettings(Credentials):
    """Base for each target's validated site settings (extra keys are refused)."""

    settings_file: ClassVar[str] = "targets file"


def target_name(text: str) -> TargetName:
    return choice(TargetName, text, "target")


def pack_qcow2(root: Path, out: Path) -> Packed:
    """The cloud targets' pack: a bootable disk of `root`, as qcow2 in `out` (the raw disk is removed)."""
    out.mkdir(parents=True, exist_ok=True)
    raw = make_disk(root, out / "disk.raw", bootable=True).path
    qcow2 = to_qcow2(raw, out / "disk.qcow2", compress=True)
    raw.unlink()
    return Packed(out, {"disk.qcow2": qcow2}, "disk.qcow2", "qcow2")
