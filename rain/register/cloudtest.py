"""`--boot-test` for the cloud targets: boot the exact packed disk here, the way that cloud would.

Each target hands its metadata over its own way, and the boot test reproduces
that way on this machine (rain.register.seeds, rain.register.imds, booted by
rain.register.vm):

- openstack: a config drive (ISO `config-2`) and Nova's SMBIOS product name;
  virtio-blk; SeaBIOS or OVMF as the site's `firmware` says.
- opennebula: the CONTEXT CD with `context.sh`; virtio-blk.
- ec2: the instance metadata service at 169.254.169.254 (IMDSv2: a token
  first), the disk on an NVMe controller as on Nitro, EC2's SMBIOS.
- generate's NoCloud seed (`cidata`), for disks that are not registered yet.

It passes only when Rain logs in over SSH, as the user the target's
contextualization makes, with a key made for this one boot and handed over
only through that metadata; and when the root file system has grown to a disk
made larger than the image (as every cloud's flavors are).
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rain.errors import TargetError
from rain.host.ssh import KeyPair
from rain.host.tools import run
from rain.register import imds, seeds, vm

log = logging.getLogger(__name__)
GROW = 1 << 30
"""The boot test's disk is this much larger than the image: the root must grow into it."""
BOOT_PARTITIONS = 65 << 20
"""What stays outside the root partition of a Rain disk: BIOS boot, EFI system partition, the GPT at both ends."""
FILL = 0.9
"""ext4 reports its size net of inode tables and journal (a few per cent): a root that fills its disk reports at
least this share of the partition."""
HOST = "rain-boot-test"
CONTEXT_USER = "rainuser"
"""The USERNAME an OpenNebula boot test puts in the context (and logs in as), as a user's template would."""
Handover = Literal["config-drive", "opennebula", "imds", "nocloud"]


@dataclass(frozen=True)
class CloudBoot:
    """How one cloud boots an instance and hands it its metadata."""

    handover: Handover
    user: str
    firmware: str = "bios"
    bus: str = "virtio"
    accel: str = "tcg"


def firmware_of(setting: str) -> str:
    """A site's firmware setting as the boot test boots it (EC2's uefi-preferred boots UEFI where it can)."""
    return "uefi" if setting.startswith("uefi") else "bios"


def boot_test(disk: Path, fmt: str, how: CloudBoot, log_path: Path, timeout: float) -> vm.BootResult:
    """Boot `disk` (never written) as `how` says; raise TargetError unless it logs in and has grown."""
    key = KeyPair.generate(f"{HOST}-{uuid.uuid4().hex[:8]}")
    virtual = virtual_size(disk, fmt)
    with tempfile.TemporaryDirectory(prefix="rain-seed-") as tmp:
        cdrom, instance, smbios = _handover(how, Path(tmp) / "seed.iso", key)
        result = vm.boot_to_ssh(disk, fmt, user=how.user, key=key, log_path=log_path, timeout=timeout,
                                firmware=how.firmware, bus=how.bus, cdrom=cdrom, imds=instance, smbios=smbios,
                                disk_size=virtual + GROW, accel=how.accel)
    if not filled(result.root_fs_bytes, result.disk_bytes, virtual):
        raise TargetError(f"the image booted, but its root file system did not grow to the disk "
                          f"({result.root_fs_bytes >> 20} MiB of a {result.disk_bytes >> 20} MiB disk)",
                          hint="install cloud-guest-utils (growpart) in the image, or let register add cloud-init; "
                               f"console log: {log_path}")
    if how.handover == "imds":
        _check_imdsv2(result.imds_requests, log_path)
    log.info("boot test: %s logged in as %s after %.0fs (console log %s)", how.handover, how.user,
             result.seconds, log_path)
    return result


def filled(root_fs: int, disk: int, image_size: int) -> bool:
    """The root grew (it is larger than the image's whole disk was) and fills the disk it booted on."""
    return root_fs > image_size and root_fs >= FILL * (disk - BOOT_PARTITIONS)


def _handover(how: CloudBoot, iso: Path, key: KeyPair) -> tuple[Path | None, imds.Instance | None,
                                                                 dict[str, str] | None]:
    """The seed CD, metadata service and SMBIOS strings of `how`'s cloud."""
    if how.handover == "config-drive":
        return (seeds.config_drive(iso, uuid=str(uuid.uuid4()), name=HOST, host=HOST, key=key.public_line,
                                   net=seeds.GuestNet()), None, vm.smbios_openstack())
    if how.handover == "opennebula":
        return seeds.opennebula(iso, host=HOST, key=key.public_line, user=how.user), None, None
    if how.handover == "imds":
        return None, imds.Instance(key=key.public_line), vm.smbios_ec2()
    # the seed CD may appear after cloud-init's generator looked for it (ds-identify runs early in boot): the
    # serial number "ds=nocloud" tells it NoCloud is there, as local QEMU users of cloud images do
    return (seeds.nocloud(iso, instance_id=f"i-{uuid.uuid4().hex[:12]}", host=HOST, key=key.public_line), None,
            {"serial": "ds=nocloud"})


def _check_imdsv2(requests: list[imds.Request], log_path: Path) -> None:
    """The image must have asked for a token before any metadata (clouds that turn IMDSv1 off need it)."""
    first = next((r for r in requests if r.status == 200), None)
    if first is None or first.method != "PUT":
        raise TargetError("the image read the EC2 metadata without an IMDSv2 token first",
                          hint=f"use cloud-init 22.4 or later; console log: {log_path}")


def virtual_size(disk: Path, fmt: str) -> int:
    if fmt == "raw":
        return disk.stat().st_size
    out = run(["qemu-img", "info", "--output=json", "-f", fmt, str(disk)], f"inspecting {disk.name}",
              TargetError, timeout=60)
    return int(json.loads(out)["virtual-size"])
