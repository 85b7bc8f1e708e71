"""Hostile disk images: a qcow2 must never read a host file through a backing or external data file, a
tiny qcow2 claiming a petabyte must not fill the registrar's disk, and a raw image's partition table must
not point the loop mount somewhere else. Each is refused with a one-line error before anything is read.

The host files are a canary directory outside Rain's work directory: a real raw disk (made the way Rain
makes one) holding a private key and a file whose names and contents carry a unique marker.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from support.images import PRIVATE_KEY, make_tree

from rain.errors import ExitCode, InvalidInput
from rain.image.disk import make_disk
from rain.register.pipeline import register
from rain.repository.models import ImageMeta, OsInfo

pytestmark = pytest.mark.integration

MARKER = "canary-5f0c9e"


def snapshot(directory: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """mode, owner, mtime, link count and content hash of every file in `directory`."""
    out = {}
    for path in sorted(directory.iterdir()):
        st = path.stat()
        out[path.name] = (st.st_mode, st.st_uid, st.st_mtime_ns, st.st_nlink,
                          hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def host_disk(tmp_path: Path, name: str = "host-disk.raw", key: bool = True) -> Path:
    """A real raw disk on the 'host' whose tree a leaking read would show in the vet report (the key's
    name) or carry into a derived image (without the key it vets clean, so the leak would register)."""
    tree = make_tree(tmp_path / "canary-tree")
    if key:
        (tree / "root/.ssh").mkdir(parents=True, exist_ok=True)
        (tree / f"root/.ssh/id_{MARKER}").write_text(PRIVATE_KEY)
    (tree / "etc/motd").write_text(f"{MARKER}\n")
    canary = tmp_path / "canary"
    canary.mkdir(exist_ok=True)
    return make_disk(tree, canary / name).path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def vet_env(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return {"TMPDIR": str(scratch)}


def assert_refused(result, *words: str) -> None:
    assert result.returncode == ExitCode.USAGE, (result.returncode, result.stdout, result.stderr)
    # progress (… unpack, ✗ unpack (InvalidInput)), then the refusal: one line
    errors = [line for line in result.stderr.splitlines() if line[:2] not in ("… ", "✓ ", "✗ ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    assert MARKER not in result.stdout + result.stderr


def test_a_qcow2_with_a_host_backing_file_is_refused_before_reading(fg, tmp_path):
    disk = host_disk(tmp_path)
    before = snapshot(disk.parent)
    upload_dir = tmp_path / "upload"
    upload_dir.mkdir()
    tiny = upload_dir / "tiny.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(tiny))
    result = fg("vet", str(tiny), "--json", env=vet_env(tmp_path))
    assert_refused(result, "backing file", str(disk))
    assert snapshot(disk.parent) == before
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_qcow2_with_an_external_data_file_is_refused_before_reading(fg, tmp_path):
    made = host_disk(tmp_path, "made.raw")
    disk = made.parent / "host-disk.raw"
    tiny = tmp_path / "tiny.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={disk},data_file_raw=on", str(tiny),
             str(made.stat().st_size))
    shutil.copyfile(made, disk)  # the data file now holds the host's disk, read 1:1 through the qcow2
    made.unlink()
    before = snapshot(disk.parent)
    result = fg("vet", str(tiny), "--json", env=vet_env(tmp_path))
    assert_refused(result, "external data file", str(disk))
    assert snapshot(disk.parent) == before


def test_a_tiny_qcow2_claiming_a_petabyte_is_refused_without_filling_the_disk(fg, tmp_path):
    huge = tmp_path / "huge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(huge), "1P")
    result = fg("vet", str(huge), env=vet_env(tmp_path))
    assert_refused(result, "virtual size", "1.0 PiB")
    assert list((tmp_path / "scratch").iterdir()) == []


def mbr(path: Path, size: int, start: int, sectors: int) -> Path:
    """A raw image of `size` bytes whose one MBR partition (type 83) starts and ends where we say."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(446)
        f.write(struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x83, b"\0\0\0", start, sectors))
        f.seek(510)
        f.write(b"\x55\xaa")
    return path


@pytest.mark.parametrize("start, sectors, words", [
    (0xFFFFFF00, 2048, ("partition 1", "beyond the end")),  # ~2 TiB into a 4 MiB file
    (2048, 0xFFFFFF00, ("partition 1", "beyond the end")),  # starts inside, claims 2 TiB
])
def test_a_hostile_partition_table_is_a_one_line_error(fg, tmp_path, start, sectors, words):
    image = mbr(tmp_path / "disk.raw", 4 << 20, start, sectors)
    result = fg("vet", str(image), env=vet_env(tmp_path), timeout=60)
    assert_refused(result, *words)


def test_register_refuses_a_backed_qcow2_and_publishes_nothing(sites, repos, tmp_path):
    disk = host_disk(tmp_path, key=False)
    before = snapshot(disk.parent)
    tiny = tmp_path / "tiny.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(tiny))
    alice = repos("alice")
    data = tiny.read_bytes()
    meta = ImageMeta(name="tiny", os=OsInfo(family="debian", release="12", arch="x86_64"), format="qcow2")
    image = alice.put(io.BytesIO(data), meta, len(data))
    with pytest.raises(InvalidInput) as e:
        register(alice, sites.settings, image.id, "openstack")
    assert "backing file" in e.value.message and "\n" not in e.value.one_line()
    assert sites["openstack"].published() == 0
    assert [i.id for i in alice.list()] == [image.id]  # no derived image recorded
    assert snapshot(disk.parent) == before
    assert os.path.exists(disk)
