"""rain.register.vm's failure paths with a real QEMU: a disk that cannot boot, and inputs refused up front."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

import pytest

from rain.errors import InvalidInput, TargetError
from rain.host.ssh import KeyPair
from rain.register import imds, vm


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_processes_naming(text: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], check=True, capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "qemu-system" in line and text in line]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rain's temporary files for this test go here, so the test can see that none are left."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("firmware, bus", [("bios", "virtio"), ("uefi", "nvme")])
def test_disk_without_boot_loader_fails_with_console_log_and_leaves_nothing(
        tmp_path: Path, private_tmp: Path, firmware: str, bus: str) -> None:
    disk = tmp_path / "published.raw"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    before = sha256(disk)
    log = tmp_path / "logs" / "boot.log"
    key = KeyPair.generate("rain-test")
    with pytest.raises(TargetError) as err:
        vm.boot_to_ssh(disk, "raw", user="debian", key=key, log_path=log, timeout=15, firmware=firmware,
                       bus=bus, imds=imds.Instance(key=key.public_line) if bus == "nvme" else None,
                       smbios=vm.smbios_ec2() if bus == "nvme" else None)
    assert f"console log: {log}" in (err.value.hint or "")
    assert "no SSH login as debian within 15s" in err.value.message
    assert "\n" not in err.value.one_line()
    assert log.is_file()  # kept for the user (what the firmware said by then depends on the host's speed)
    assert qemu_processes_naming(str(log)) == []
    assert sha256(disk) == before
    assert list(private_tmp.iterdir()) == []


def test_qemu_that_cannot_start_is_reported_with_its_error(tmp_path: Path, private_tmp: Path) -> None:
    disk = tmp_path / "not-qcow2.img"
    disk.write_bytes(b"plain bytes, not a qcow2 image" * 100)
    with pytest.raises(TargetError) as err:
        vm.boot_to_ssh(disk, "qcow2", user="debian", key=KeyPair.generate("t"), log_path=tmp_path / "c.log",
                       timeout=30)
    assert "overlay" in err.value.message
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("kwargs, problem", [
    ({"fmt": "vmdk"}, "unknown disk format 'vmdk'"),
    ({"firmware": "coreboot"}, "unknown firmware"),
    ({"bus": "scsi"}, "unknown disk bus"),
    ({"accel": "hvf"}, "unknown accelerator"),
    ({"cdrom": Path("/nonexistent/seed.iso")}, "seed CD /nonexistent/seed.iso is not a file"),
    ({"smbios": {"product": "x,drive=evil"}}, "SMBIOS field product"),
])
def test_bad_inputs_are_refused_before_qemu_starts(tmp_path: Path, private_tmp: Path, kwargs: dict[str, object],
                                                   problem: str) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * 512)
    args: dict[str, object] = {"fmt": "raw", **kwargs}
    fmt = str(args.pop("fmt"))
    with pytest.raises(InvalidInput, match=problem) as err:
        vm.boot_to_ssh(disk, fmt, user="debian", key=KeyPair.generate("t"), log_path=tmp_path / "c.log",
                       timeout=5, **args)  # type: ignore[arg-type]
    assert err.value.hint
    assert not (tmp_path / "c.log").exists()
    assert list(private_tmp.iterdir()) == []
