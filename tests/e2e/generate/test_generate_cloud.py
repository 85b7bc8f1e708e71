"""Acceptance 1 of the cloud-boot work: the cloud recipe's qcow2 boots by its own loader, under SeaBIOS and
under OVMF, to an SSH login with a key handed over through a NoCloud seed, and its root fills a larger disk;
the kernel recipe's raw disk (no cloud-init) also grows its root into a larger disk at first boot.

The image is built once per session (and cached across sessions) by tests/support/built_images.py;
each boot is a real QEMU under TCG, a minute or two."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.built_images import build_cloud_image, build_debian_tarball

from rain.register import cloudtest, vm

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BOOT_TIMEOUT = 900.0  # TCG on a loaded 2-core machine; a healthy boot takes 1-2 minutes


def _sha256(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


@pytest.fixture(scope="session")
def cloud_qcow2() -> Path:
    return build_cloud_image() / "debian-bookworm-cloud.qcow2"


def test_the_cloud_disk_boots_by_bios_and_its_root_fills_a_disk_enlarged_with_qemu_img_resize(
        cloud_qcow2: Path, tmp_path: Path) -> None:
    disk = tmp_path / "cloud.qcow2"
    shutil.copyfile(cloud_qcow2, disk)
    before = cloudtest.virtual_size(disk, "qcow2")
    subprocess.run(["qemu-img", "resize", "-q", str(disk), "+2G"], check=True)
    resized = _sha256(disk)
    log = tmp_path / "console.log"
    result = cloudtest.boot_test(disk, "qcow2", cloudtest.CloudBoot("nocloud", "debian", "bios"), log, BOOT_TIMEOUT)
    assert result.user == "debian", "cloud-init made Debian's default user and gave it the seed's key"
    assert result.disk_bytes >= before + (2 << 30), "the guest sees the enlarged disk"
    assert cloudtest.filled(result.root_fs_bytes, result.disk_bytes, before + (2 << 30)), \
        "growpart + resize2fs filled the enlarged disk"
    console = log.read_text(errors="replace")
    assert "GNU GRUB" in console and "6.1.0" in console, "the image's own loader booted the image's own kernel"
    assert _sha256(disk) == resized, "the boot ran on an overlay: the disk it booted is unchanged"


def test_the_cloud_disk_boots_by_uefi(cloud_qcow2: Path, tmp_path: Path) -> None:
    before = _sha256(cloud_qcow2)
    log = tmp_path / "console.log"
    result = cloudtest.boot_test(cloud_qcow2, "qcow2", cloudtest.CloudBoot("nocloud", "debian", "uefi"), log,
                                 BOOT_TIMEOUT)
    assert result.user == "debian"
    console = log.read_text(errors="replace")
    assert "BdsDxe: loading" in console and "efi: EFI v" in console, "OVMF loaded GRUB, which started the kernel"
    assert _sha256(cloud_qcow2) == before, "a boot test never writes the image it boots"


def test_a_disk_without_cloud_init_grows_its_root_at_first_boot(tmp_path: Path) -> None:
    """systemd-repart grows the root partition and systemd-growfs the ext4 (rain.image.growroot), seen on
    the serial console and then in the disk's own partition table and superblock."""
    import json
    import time

    raw = build_debian_tarball().parent / "debian-bookworm-kernel.raw"
    disk = tmp_path / "kernel.raw"
    subprocess.run(["cp", "--sparse=always", str(raw), str(disk)], check=True)
    before = disk.stat().st_size
    with open(disk, "r+b") as f:
        f.truncate(before + (2 << 30))
    log = tmp_path / "console.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nodefaults", "-display", "none",
            "-serial", f"file:{log}", "-monitor", "none", "-drive", f"file={disk},format=raw,if=virtio"]
    deadline = time.monotonic() + BOOT_TIMEOUT
    with vm.qemu(argv, tmp_path / "qemu.err") as guest:
        while "Successfully resized" not in (log.read_text(errors="replace") if log.exists() else ""):
            assert guest.exited() is None and time.monotonic() < deadline, vm.last_console_line(log)
            time.sleep(2)
        time.sleep(10)  # the ext4 journal commits the new size within its 5 s interval
    console = log.read_text(errors="replace")
    assert "GNU GRUB" in console, "the image's own loader booted it"
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    root = table["partitions"][-1]
    end = (root["start"] + root["size"]) * 512
    assert end >= before + (2 << 30) - (2 << 20), "systemd-repart grew the root partition to the disk's end"
    with open(disk, "rb") as f:  # the ext4 superblock: 1 KiB into the partition
        f.seek(root["start"] * 512 + 1024)
        sb = f.read(1024)
    blocks = int.from_bytes(sb[4:8], "little") | int.from_bytes(sb[0x150:0x154], "little") << 32
    fs_bytes = blocks * (1024 << int.from_bytes(sb[24:28], "little"))
    assert fs_bytes >= root["size"] * 512 - (4 << 20), "systemd-growfs grew the ext4 to its partition"
