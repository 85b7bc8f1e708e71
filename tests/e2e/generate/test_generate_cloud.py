"""Acceptance 1 of the cloud-boot work: the cloud recipe's qcow2 boots by its own loader, under SeaBIOS and
under OVMF, to an SSH login with a key handed over through a NoCloud seed, and its root fills a larger disk.

The image is built once per session (and cached across sessions) by tests/e2e/register/debian_image.py;
each boot is a real QEMU under TCG, a minute or two."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "register"))
from debian_image import build_cloud_image  # noqa: E402

from rain.register import cloudtest  # noqa: E402

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
