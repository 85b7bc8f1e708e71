"""Root tree → tar.zst, raw disk (bootable by BIOS and UEFI when the tree has a kernel: rain.image.disk), qcow2,
squashfs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rain.digests import sha256_of
from rain.generate.recipe import Format
from rain.host import tools
from rain.image import disk
from rain.image.formats import make_squashfs, to_qcow2
from rain.image.tarball import pack_tar_zst

SUFFIX = {Format.TAR_ZST: "tar.zst", Format.RAW: "raw", Format.QCOW2: "qcow2", Format.SQUASHFS: "squashfs"}
_DISK_TOOLS = ["mkfs.ext4", "sfdisk", "mkfs.vfat", "mmd", "mcopy", "grub-mkimage", "grub-bios-setup", "unshare"]
_TOOLS = {Format.TAR_ZST: ["tar"], Format.RAW: _DISK_TOOLS, Format.QCOW2: [*_DISK_TOOLS, "qemu-img"],
          Format.SQUASHFS: ["mksquashfs"]}


@dataclass(frozen=True)
class ArtifactFile:
    format: Format
    path: Path
    size: int
    sha256: str
    bootable: bool | None = None
    """raw/qcow2: whether the disk has a boot loader (the tree had a kernel); None for other formats."""


def check_tools(formats: list[Format]) -> None:
    for f in formats:
        for name in _TOOLS[f]:
            tools.tool(name)


def pack(root: Path, out: Path, stem: str, formats: list[Format], disk_size: int | None,
         reporter, epoch: int | None = None, seed: str | None = None) -> list[ArtifactFile]:  # type: ignore[no-untyped-def]
    """The tree in each format under out. `epoch` clamps every format's file times and is the file systems'
    own time; `seed` gives a disk's identifiers (rain.image.disk): with both, one tree gives the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    raw: Path | None = None
    bootable: bool | None = None
    for fmt in formats:
        with reporter.step(f"pack {fmt}"):
            dest = out / f"{stem}.{SUFFIX[fmt]}"
            if fmt is Format.TAR_ZST:
                pack_tar_zst(root, dest, epoch)
            elif fmt is Format.SQUASHFS:
                make_squashfs(root, dest, level=6, processors=2, epoch=epoch)  # kept and shared: worth level 6
            else:
                if raw is None:
                    raw = out / f"{stem}.raw"
                    bootable = disk.make_disk(root, raw, disk_size, seed=seed, epoch=epoch).bootable
                if fmt is Format.QCOW2:
                    to_qcow2(raw, dest, compress=False)
            files.append(dest)
    if raw is not None and Format.RAW not in formats:
        raw.unlink(missing_ok=True)
    return [ArtifactFile(f, p, p.stat().st_size, sha256_of(p), bootable if f in (Format.RAW, Format.QCOW2) else None)
            for f, p in zip(formats, files, strict=True)]
