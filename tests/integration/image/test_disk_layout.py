"""rain.image.disk on small trees: the layout and boot loader a bootable disk must carry, read back with
the plain tools (sfdisk, mtools, dumpe2fs). Booting real images is tested in tests/e2e/generate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rain.digests import sha256_of
from rain.errors import BuildError, RecipeError
from rain.image.disk import BIOS_BOOT, ESP, ROOT_LABEL, ROOT_START, boot_files, make_disk

pytestmark = pytest.mark.integration


def _tree(root: Path, kernel: bool, fstab: bool = True) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("rain\n")
    if fstab:
        (root / "etc" / "fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 defaults 0 1\n")
    if kernel:
        (root / "boot").mkdir()
        (root / "boot" / "vmlinuz-6.1.0-99-amd64").write_bytes(b"kernel")
        (root / "boot" / "initrd.img-6.1.0-99-amd64").write_bytes(b"initrd")
        (root / "vmlinuz").symlink_to("boot/vmlinuz-6.1.0-99-amd64")
        (root / "initrd.img").symlink_to("boot/initrd.img-6.1.0-99-amd64")
    return root


def _table(disk: Path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def _esp(disk: Path, path: str) -> str:
    return subprocess.run(["mtype", "-i", f"{disk}@@{ESP[0]}", f"::{path}"], capture_output=True,
                          check=True).stdout.decode(errors="replace")


def test_a_tree_with_a_kernel_gets_a_gpt_disk_that_boots_by_bios_and_uefi(tmp_path: Path) -> None:
    made = make_disk(_tree(tmp_path / "root", kernel=True), tmp_path / "disk.raw")
    assert made.bootable and made.kernel == "/vmlinuz"
    table = _table(made.path)
    assert table["label"] == "gpt"
    bios, esp, root = table["partitions"]
    assert bios["type"] == "21686148-6449-6E6F-744E-656564454649" and bios["start"] * 512 == BIOS_BOOT[0]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and esp["start"] * 512 == ESP[0]
    assert root["start"] * 512 == ROOT_START and (root["start"] + root["size"]) * 512 <= made.size - 33 * 512
    with open(made.path, "rb") as f:
        mbr = f.read(512)
        f.seek(BIOS_BOOT[0])
        core = f.read(512)
    assert mbr[0x5C:0x64] == (BIOS_BOOT[0] // 512).to_bytes(8, "little"), "boot.img points at GRUB's core"
    assert mbr[510:512] == b"\x55\xaa" and core != bytes(512), "GRUB's core is in the BIOS boot partition"
    assert _esp(made.path, "/EFI/BOOT/BOOTX64.EFI").startswith("MZ"), "the UEFI loader is a PE binary"
    cfg = _esp(made.path, "/grub/grub.cfg")
    assert f"search --no-floppy --fs-uuid --set=root {made.root_uuid}" in cfg
    assert f"linux /vmlinuz root=UUID={made.root_uuid} ro console=tty0 console=ttyS0,115200 net.ifnames=0" in cfg
    assert "initrd /initrd.img" in cfg
    info = subprocess.run(["dumpe2fs", "-h", f"{made.path}?offset={ROOT_START}"], capture_output=True, text=True)
    assert made.root_uuid in info.stdout and f"volume name:   {ROOT_LABEL}" in info.stdout
    assert not list(tmp_path.glob(".disk.raw*")), "no partial file left"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["boot", "etc", "initrd.img", "vmlinuz"], \
        "the image's own tree is not changed"


def test_no_fstab_entry_for_root_boots_it_read_write(tmp_path: Path) -> None:
    made = make_disk(_tree(tmp_path / "root", kernel=True, fstab=False), tmp_path / "disk.raw")
    assert f"root=UUID={made.root_uuid} rw " in _esp(made.path, "/grub/grub.cfg")


def test_the_newest_versioned_kernel_is_used_without_links(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root", kernel=True)
    for link in ("vmlinuz", "initrd.img"):
        (root / link).unlink()
    (root / "boot" / "vmlinuz-6.1.0-98-amd64").write_bytes(b"older")
    assert boot_files(root) == ("/boot/vmlinuz-6.1.0-99-amd64", "/boot/initrd.img-6.1.0-99-amd64")


def test_links_that_loop_or_lead_nowhere_are_not_a_kernel(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root", kernel=False)
    (root / "vmlinuz").symlink_to("vmlinuz")
    (root / "initrd.img").symlink_to("/boot/initrd.img-missing")
    assert boot_files(root) is None


def test_a_tree_without_a_kernel_gets_the_plain_disk(tmp_path: Path) -> None:
    made = make_disk(_tree(tmp_path / "root", kernel=False), tmp_path / "disk.raw")
    assert not made.bootable and made.kernel is None
    table = _table(made.path)
    assert table["label"] == "dos" and len(table["partitions"]) == 1


def test_asking_for_a_bootable_disk_without_a_kernel_names_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no kernel") as e:
        make_disk(_tree(tmp_path / "root", kernel=False), tmp_path / "disk.raw", bootable=True)
    assert "linux-image-amd64" in (e.value.hint or "")
    assert not list(tmp_path.glob("*disk.raw*"))


def test_a_disk_size_too_small_for_the_files_is_a_recipe_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root", kernel=True)
    (root / "big").write_bytes(b"x" * (40 << 20))
    with pytest.raises(RecipeError, match="too small"):
        make_disk(root, tmp_path / "disk.raw", size=80 << 20)
    assert not list(tmp_path.glob("*disk.raw*"))


def _copy(tree: Path, dest: Path) -> Path:
    """A copy of the tree made now: the same names, bytes, owners, modes and mtimes, other change times."""
    subprocess.run(["cp", "-a", str(tree), str(dest)], check=True)
    return dest


def test_a_seed_and_an_epoch_give_the_same_disk_and_squashfs_from_two_copies_of_a_tree(tmp_path: Path) -> None:
    """Issue #16: identifiers from the seed, every clock-given time the epoch, later file times clamped. The
    tree has names debugfs must be given quoted (spaces, a quote) or as they are (a systemd-style \\x2d), and
    files newer than the epoch; the copies differ in every change time and were made at different seconds."""
    from rain.image.formats import make_squashfs

    tree = _tree(tmp_path / "root", kernel=True)
    (tree / "usr" / "lib" / "systemd" / "system").mkdir(parents=True)
    (tree / "usr" / "lib" / "systemd" / "system" / "system-systemd\\x2dcryptsetup.slice").write_text("[Unit]\n")
    (tree / "etc" / 'a "quoted" name with spaces').write_text("x\n")
    (tree / "sbin").mkdir()
    (tree / "sbin" / "systemd-repart").write_text("")  # so the growth units are added (rain.image.growroot)
    epoch = 1_700_000_000
    first = _copy(tree, tmp_path / "first")
    import time

    time.sleep(1.1)
    second = _copy(tree, tmp_path / "second")
    digests = {}
    for copy in (first, second):
        made = make_disk(copy, tmp_path / f"{copy.name}.raw", seed="recipe-hash", epoch=epoch)
        squash = make_squashfs(copy, tmp_path / f"{copy.name}.squashfs", level=1, processors=1, epoch=epoch)
        digests[copy.name] = (made.root_uuid, sha256_of(made.path), sha256_of(squash))
    assert digests["first"] == digests["second"]
    serial = subprocess.run(["minfo", "-i", f"{tmp_path / 'first.raw'}@@{ESP[0]}"], capture_output=True,
                            text=True, check=True).stdout.split("serial number: ")[1][:8]
    efi = subprocess.run(["mtype", "-i", f"{tmp_path / 'first.raw'}@@{ESP[0]}", "::/EFI/BOOT/BOOTX64.EFI"],
                         capture_output=True, check=True).stdout
    assert f"--fs-uuid --set=root {serial[:4]}-{serial[4:]}".lower().encode() in efi.lower(), \
        "GRUB looks for the ESP by the volume id the ESP has"
    assert serial != "1234ABCD", "not mkfs.vfat --invariant's constant: each disk's own"
    other = make_disk(first, tmp_path / "other.raw", seed="another recipe", epoch=epoch)
    assert other.root_uuid != digests["first"][0] and _table(other.path)["id"] != _table(tmp_path / "first.raw")["id"]
    info = subprocess.run(["debugfs", "-R", "stat /etc/hostname", f"{tmp_path / 'first.raw'}?offset={ROOT_START}"],
                          capture_output=True, text=True).stdout
    assert info.count("0x6553f100") >= 4, "ctime, atime, mtime (clamped) and crtime are the epoch:\n" + info
    loop = subprocess.run(["losetup", "-f", "--show", "-r", "-o", str(ROOT_START), str(tmp_path / "first.raw")],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        check = subprocess.run(["e2fsck", "-fn", loop], capture_output=True, text=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert check.returncode == 0, "the settled file system is clean:\n" + check.stdout + check.stderr

