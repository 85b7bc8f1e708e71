"""Whole disks from a root tree, made with the plain tools and no loop device.

A tree with a kernel becomes a bootable disk laid out the way Debian's own
cloud images are: GPT; a 1 MiB BIOS boot partition holding GRUB's core for
legacy BIOS; an EFI system partition holding GRUB for UEFI
(`EFI/BOOT/BOOTX64.EFI`, the removable-media path every firmware tries) and
the one `grub/grub.cfg` both loaders read; and the root file system last, so
growpart can grow it into a larger disk at first boot. The root is found by
its file system UUID; the kernel and initramfs are the image's own, through
the `/vmlinuz` and `/initrd.img` links Debian keeps current across kernel
upgrades. The image's own tree is not changed: the loader and its config live
outside it, and an image without cloud-init gets systemd-repart and
systemd-growfs units in the disk's root file system only (rain.image.growroot).

A tree without a kernel becomes today's plain disk: an MBR and one ext4
partition, which `show` reports as not bootable.

Each file system is written straight into the disk file at its offset
(`mkfs.ext4 -E offset=`, `mkfs.vfat --offset`, mtools' `@@offset`), because
this kernel has no device-mapper and `losetup -P` makes no partition nodes.

Given a `seed` and an `epoch` (generate gives the recipe hash and the source date
epoch) a disk is the same bytes every time: the GPT's disk and partition GUIDs,
the root file system's UUID and directory hash seed and the ESP's volume id come
from the seed, not chance; every time the tools would take from the clock (the
file systems' own, each inode's change and creation times, the FAT's entries)
is the epoch, and file times after it are clamped to it, as in the tar.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from rain.errors import BuildError, RecipeError
from rain.host.tools import run, tool
from rain.image import growroot
from rain.image.rootfs import RootFS, walk_tree

MiB = 1 << 20
SECTOR = 512
ROOT_LABEL = "rootfs"
"""The ext4 label of every root file system Rain writes (generate and register alike)."""
ESP_LABEL = "RAIN-ESP"
BIOS_BOOT = (1 * MiB, 1 * MiB)  # offset, size
ESP = (2 * MiB, 62 * MiB)
ROOT_START = 64 * MiB
GPT_TAIL = 1 * MiB  # the backup GPT lives in the last 33 sectors; keep the root MiB-aligned
PLAIN_START = 1 * MiB
CONSOLE = "console=tty0 console=ttyS0,115200"
NET_NAMES = "net.ifnames=0"
"""eth0 on every cloud: one image meets NICs on different buses (virtio on PCI, ENA, emulated), and a recipe's
own /etc/network/interfaces.d/eth0 stays valid everywhere; cloud-init matches interfaces by MAC either way."""
_TYPES = {"bios": "21686148-6449-6E6F-744E-656564454649", "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
          "root": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"}  # root: the x86-64 root type of the discoverable spec
_GRUB_MODULES = ["part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_uuid", "search_label", "normal",
                 "configfile", "linux", "echo", "test", "serial", "terminal", "sleep", "gzio"]
_BIOS_MODULES = ["biosdisk", *_GRUB_MODULES]
_EFI_MODULES = [*_GRUB_MODULES, "efi_gop", "efi_uga"]
_KERNELS = (("/vmlinuz", "/initrd.img"), ("/boot/vmlinuz", "/boot/initrd.img"))
TIMEOUT = 600.0


@dataclass(frozen=True)
class Disk:
    path: Path
    size: int
    bootable: bool
    root_uuid: str
    kernel: str | None
    """The kernel path inside the image the loader boots (None: not bootable)."""


def tree_size(root: Path) -> int:
    """Bytes the tree takes on disk (each entry at least a block); iterative, so any depth is fine."""
    return sum(max(st.st_blocks * 512, 4096) for _, st in walk_tree(root))


def boot_files(root: Path) -> tuple[str, str] | None:
    """(kernel, initramfs) inside the image the loader should boot, or None when it has no kernel.

    Prefer the links the distribution keeps current (`/vmlinuz`, `/boot/vmlinuz`), so a kernel upgrade
    inside a running machine needs no loader change; else the newest `/boot/vmlinuz-VERSION`."""
    tree = RootFS(root)
    for kernel, initrd in _KERNELS:
        if tree.is_regular(kernel) and tree.is_regular(initrd):
            return kernel, initrd
    for kernel in sorted(tree.kernels(), reverse=True):
        version = kernel.rsplit("vmlinuz-", 1)[1]
        initrd = f"/boot/initrd.img-{version}"
        if tree.is_regular(initrd):
            return kernel, initrd
    return None


@dataclass(frozen=True)
class _Ids:
    """Every identifier a disk carries: from the seed when there is one, else random (register's copies)."""

    seed: str | None

    def uuid(self, what: str) -> str:
        if self.seed is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(bytes=hashlib.sha256(f"{self.seed}:{what}".encode()).digest()[:16], version=4))


def make_disk(root: Path, dest: Path, size: int | None = None, bootable: bool | None = None,
              kernel_args: str = "", seed: str | None = None, epoch: int | None = None) -> Disk:
    """Write a sparse raw disk holding `root`. Bootable when the tree has a kernel and initramfs (or
    when asked: `bootable=True` without them is an error naming what is missing). With `seed` and `epoch`
    the same tree gives the same bytes (see the module's doc)."""
    files = boot_files(root)
    if bootable and files is None:
        raise BuildError("the image has no kernel and initramfs to boot (/vmlinuz or /boot/vmlinuz-*)",
                         hint="add linux-image-amd64 (Debian) or kernel (RPM family) to the recipe's packages")
    if bootable is False:
        files = None
    head = ROOT_START if files else PLAIN_START
    tail = GPT_TAIL if files else 0
    needed = tree_size(root)
    auto = _round_mib(int(needed * 1.25) + 256 * MiB)
    fs_bytes = auto if size is None else _round_mib(size) - head - tail
    if fs_bytes < needed + 16 * MiB:
        raise RecipeError(f"disk_size: {_round_mib(size or 0) // MiB} MiB is too small for "
                          f"{needed // MiB} MiB of files", hint=f"use at least {(auto + head + tail) // MiB}M, "
                          "or leave disk_size out")
    total = head + fs_bytes + tail
    ids = _Ids(seed)
    root_uuid = ids.uuid("root")
    clock = {} if epoch is None else {"E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch)}
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(tmp, "wb") as f:
            f.truncate(total)
        if files:
            _partition_gpt(tmp, fs_bytes, ids)
        else:
            label = f"label-id: 0x{ids.uuid('mbr')[:8]}\n" if seed is not None else ""
            run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(tmp)], "partitioning the disk",
                input=f"label: dos\n{label}start={PLAIN_START // SECTOR}, type=83, bootable\n".encode())
        _mkfs_root(root, tmp, head, fs_bytes, root_uuid, ids.uuid("hash") if seed is not None else None, clock)
        if files:
            growroot.add(root, tmp, head, clock)  # the root follows a larger disk (cloud-init does it where present)
        if epoch is not None:
            _settle_times(root, tmp, head, epoch, clock)
        if files:
            _install_grub(tmp, root_uuid, files, _cmdline(root, root_uuid, kernel_args), ids, clock)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Disk(dest, total, files is not None, root_uuid, files[0] if files else None)


def _cmdline(root: Path, root_uuid: str, extra: str) -> str:
    """`ro` when the image's fstab mounts / (systemd remounts it rw after fsck), else `rw`: with no fstab
    entry nothing would ever make the root writable."""
    fstab = RootFS(root).read_text("/etc/fstab") or ""
    mounts_root = any(len(f) >= 2 and f[1] == "/" for f in (line.split() for line in fstab.splitlines())
                      if f and not f[0].startswith("#"))
    parts = (f"root=UUID={root_uuid}", "ro" if mounts_root else "rw", CONSOLE, NET_NAMES, extra)
    return " ".join(p for p in parts if p)


def _partition_gpt(disk: Path, fs_bytes: int, ids: _Ids) -> None:
    guids = {n: (f", uuid={ids.uuid('part-' + n)}" if ids.seed is not None else "") for n in ("bios", "esp", "root")}
    script = ("label: gpt\nfirst-lba: 2048\n" + (f"label-id: {ids.uuid('gpt')}\n" if ids.seed is not None else "")
              + f"start={BIOS_BOOT[0] // SECTOR}, size={BIOS_BOOT[1] // SECTOR}, type={_TYPES['bios']}, "
              f"name=bios{guids['bios']}\n"
              f"start={ESP[0] // SECTOR}, size={ESP[1] // SECTOR}, type={_TYPES['esp']}, name=esp{guids['esp']}\n"
              f"start={ROOT_START // SECTOR}, size={fs_bytes // SECTOR}, type={_TYPES['root']}, "
              f"name=root{guids['root']}\n")
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], "partitioning the disk",
        input=script.encode())


def _mkfs_root(root: Path, disk: Path, offset: int, fs_bytes: int, root_uuid: str, hash_seed: str | None,
               clock: dict[str, str]) -> None:
    extended = f"offset={offset},root_owner=0:0" + (f",hash_seed={hash_seed}" if hash_seed else "")
    try:
        run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", root_uuid, "-E", extended,
             "-d", str(root), str(disk), f"{fs_bytes // 1024}k"], "writing the ext4 file system",
            timeout=TIMEOUT, env=clock)
    except BuildError as e:
        if "No space left" in e.message or "Could not allocate" in e.message:
            raise RecipeError(f"disk_size: {fs_bytes // MiB} MiB of root file system is too small",
                              hint="leave disk_size out, or make it larger") from None
        raise


def _settle_times(root: Path, disk: Path, offset: int, epoch: int, clock: dict[str, str]) -> None:
    """Every inode's access, change and creation time is the epoch, and a modification time after it is
    clamped to it. mke2fs -d copies them from the tree, where the change times are when the build ran (and
    no program may set those), so they are set in the file system, by debugfs, in one run."""
    lines: list[str] = []
    every = ("atime", "ctime", "crtime")
    for inner, st in walk_tree(root):
        if "\n" in inner:
            continue  # debugfs reads one command a line: such a name keeps its times (no package ships one)
        # debugfs splits on white space; a quoted word may hold any, and "" is a quote (lib/ss/parse.c)
        name = '"' + inner.replace('"', '""') + '"' if any(c.isspace() or c == '"' for c in inner) else inner
        lines.extend(f"sif {name} {field} {epoch}" for field in (*every, *(("mtime",) if st.st_mtime > epoch else ())))
    for fixed in ("/", "/lost+found"):
        lines.extend(f"sif {fixed} {field} {epoch}" for field in (*every, "mtime"))
    run(["debugfs", "-w", "-f", "-", f"{disk}?offset={offset}"], "setting the root file system's times",
        input=("\n".join(lines) + "\n").encode(), timeout=TIMEOUT, env=clock)


def grub_config(root_uuid: str, files: tuple[str, str], cmdline: str) -> str:
    kernel, initrd = files
    return ("# written by Rain: boots the image's own kernel; read by GRUB for BIOS and for UEFI\n"
            "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
            "set timeout=1\nset default=0\n"
            f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"menuentry 'Linux (Rain image)' {{\n  linux {kernel} {cmdline}\n  initrd {initrd}\n}}\n")


def _install_grub(disk: Path, root_uuid: str, files: tuple[str, str], cmdline: str, ids: _Ids,
                  clock: dict[str, str]) -> None:
    """GRUB for both firmwares. Both loaders carry a tiny built-in config that finds this disk's ESP by its
    volume id (random per disk, so a second Rain disk in the machine is not taken for it) and reads
    grub/grub.cfg there; the BIOS core goes into the BIOS boot partition by grub-bios-setup."""
    esp_at = f"{disk}@@{ESP[0]}"
    volume = ids.uuid("esp").replace("-", "")[:8]
    invariant = ["--invariant"] if clock else []  # its label entry's time is the clock's, SOURCE_DATE_EPOCH or not
    run(["mkfs.vfat", "-F", "16", "-n", ESP_LABEL, "-i", volume, *invariant, "--offset", str(ESP[0] // SECTOR),
         str(disk), str(ESP[1] // 1024)], "writing the EFI system partition", env=clock)
    if invariant:  # which also makes every volume id 1234-ABCD: put this disk's back (FAT16 boot sector, 0x27)
        with open(disk, "r+b") as f:
            f.seek(ESP[0] + 0x27)
            f.write(int(volume, 16).to_bytes(4, "little"))
    with tempfile.TemporaryDirectory(prefix="rain-grub-") as tmp:
        work = Path(tmp)
        early = work / "early.cfg"
        early.write_text(f"search --no-floppy --fs-uuid --set=root {volume[:4]}-{volume[4:]}\n"
                         "set prefix=($root)/grub\n")
        (work / "grub.cfg").write_text(grub_config(root_uuid, files, cmdline))
        efi = work / "BOOTX64.EFI"
        run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(efi), "-c", str(early), "-p", "/grub",
             *_EFI_MODULES], "making GRUB for UEFI")
        run(["mmd", "-i", esp_at, "::/EFI", "::/EFI/BOOT", "::/grub"], "writing the EFI system partition", env=clock)
        run(["mcopy", "-i", esp_at, str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "writing the EFI system partition",
            env=clock)
        run(["mcopy", "-i", esp_at, str(work / "grub.cfg"), "::/grub/grub.cfg"], "writing the EFI system partition",
            env=clock)
        _install_bios(disk, work, early)


def _install_bios(disk: Path, work: Path, early: Path) -> None:
    """grub-bios-setup on a disk *file*: it writes boot.img into the MBR and core.img into the BIOS boot
    partition. It insists on probing the device under its --directory first (the host's root disk, which
    it may not understand), so it runs in a private mount namespace whose mountinfo names the disk file
    as that device (the trick mkosi uses). The namespace dies with the command; the host sees nothing."""
    grub_dir = work / "i386-pc"
    grub_dir.mkdir()
    core = grub_dir / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-c", str(early), "-p", "/grub", *_BIOS_MODULES],
        "making GRUB for BIOS")
    setup = tool("grub-bios-setup")
    (grub_dir / "boot.img").write_bytes((Path(setup).parent / "boot.img").read_bytes())
    (work / "device.map").write_text(f"(hd0) {disk}\n")
    (work / "mountinfo").write_text(f"1 0 1:1 / / rw - ext4 {disk} rw\n")
    run([tool("unshare"), "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "/proc/$$/mountinfo" && shift && exec "$@"', "sh", str(work / "mountinfo"),
         setup, "--directory", str(grub_dir), "--device-map", str(work / "device.map"),
         "--boot-image", "boot.img", "--core-image", "core.img", str(disk)],
        "installing GRUB for BIOS", timeout=120)
    if _read(disk, 0x5C, 8) != (BIOS_BOOT[0] // SECTOR).to_bytes(8, "little"):
        raise BuildError("installing GRUB for BIOS: the boot sector does not point at the BIOS boot partition",
                         hint="check grub-pc-bin is installed and not modified (run scripts/setup.sh)")


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _round_mib(n: int) -> int:
    return (n + MiB - 1) // MiB * MiB
