"""export.write_output: `register --output` puts the packed image at PATH whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rain.errors import InvalidInput
from rain.register.export import check_destination, write_output
from rain.register.models import Packed

SHM = Path("/dev/shm")


def packed(work: Path, names: tuple[str, ...], size: int = 4 << 20) -> Packed:
    """Packed files as a target's pack step leaves them: a sparse disk (a hole, then data) or several."""
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        path = work / name
        with open(path, "wb") as f:
            f.truncate(size)
            f.seek(size - 5)
            f.write(name[:5].encode().ljust(5, b"."))
        files[name] = path
    return Packed(work, files, names[0], "raw")


def test_a_single_file_target_gets_a_file_and_nothing_beside_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    names = write_output(packed(tmp_path / "work", ("disk.raw",)), out / "img.raw", force=False)
    assert names == ["img.raw"] and os.listdir(out) == ["img.raw"]
    assert (out / "img.raw").read_bytes()[-5:] == b"disk."


@pytest.mark.skipif(not SHM.is_dir() or os.stat(SHM).st_dev == os.stat("/tmp").st_dev,
                    reason="needs a second file system (/dev/shm)")
def test_across_file_systems_the_copy_keeps_the_disk_sparse(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    work = SHM / f"rain-test-export-{os.getpid()}"
    try:
        write_output(packed(work, ("disk.raw",), size=64 << 20), out / "img.raw", force=False)
    finally:
        for p in work.glob("*"):
            p.unlink()
        work.rmdir()
    st = (out / "img.raw").stat()
    assert st.st_size == 64 << 20 and st.st_blocks * 512 < 1 << 20  # the holes stayed holes


def test_several_files_become_a_directory(tmp_path):
    names = write_output(packed(tmp_path / "work", ("rootfs.squashfs", "vmlinuz", "initrd.img")),
                         tmp_path / "hpc", force=False)
    assert names == sorted(os.listdir(tmp_path / "hpc")) == ["initrd.img", "rootfs.squashfs", "vmlinuz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpc", "work"]


def test_an_existing_path_is_kept_unless_forced(tmp_path):
    target = tmp_path / "img.raw"
    target.write_text("earlier\n")
    with pytest.raises(InvalidInput, match="already exists") as e:
        write_output(packed(tmp_path / "work", ("disk.raw",)), target, force=False)
    assert "--force" in (e.value.hint or "") and target.read_text() == "earlier\n"
    write_output(packed(tmp_path / "work", ("disk.raw",)), target, force=True)
    assert target.read_bytes()[-5:] == b"disk."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.raw", "work"]


def test_forced_over_a_directory_replaces_only_an_earlier_export(tmp_path):
    target = tmp_path / "hpc"
    target.mkdir()
    (target / "vmlinuz").write_text("an earlier export's kernel\n")
    write_output(packed(tmp_path / "work", ("vmlinuz", "initrd.img")), target, force=True)
    assert sorted(os.listdir(target)) == ["initrd.img", "vmlinuz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpc", "work"]

    home = tmp_path / "home"
    (home / "projects").mkdir(parents=True)
    (home / "notes.txt").write_text("mine\n")
    with pytest.raises(InvalidInput, match="more than an earlier export"):
        check_destination(home, force=True)  # refused before any work
    other = tmp_path / "other"
    other.mkdir()
    (other / "README").write_text("an operator's file\n")  # plain files, but not an export's
    with pytest.raises(InvalidInput, match="more than an earlier export"):
        write_output(packed(tmp_path / "work2", ("vmlinuz", "initrd.img")), other, force=True)
    assert (home / "notes.txt").read_text() == "mine\n" and os.listdir(other) == ["README"]
    assert (tmp_path / "work2" / "vmlinuz").is_file()  # refused before moving anything


def test_a_failure_halfway_leaves_nothing_at_path(tmp_path):
    files = packed(tmp_path / "work", ("vmlinuz", "initrd.img"))
    files.files["initrd.img"].unlink()  # the second file cannot be moved
    with pytest.raises(FileNotFoundError):
        write_output(files, tmp_path / "hpc", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="no directory"):
        check_destination(tmp_path / "absent" / "img.qcow2", force=False)
