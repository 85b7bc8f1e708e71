"""Root tree → tar.zst, raw disk (MBR + one ext4 partition, no loop device), qcow2, squashfs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from rain.errors import BuildError, RecipeError
from rain.generate import command
from rain.generate.cache import TAR_OPTS
from rain.generate.recipe import Format

MiB = 1 << 20
PART_OFFSET = MiB  # the partition starts at sector 2048
SUFFIX = {Format.TAR_ZST: "tar.zst", Format.RAW: "raw", Format.QCOW2: "qcow2", Format.SQUASHFS: "squashfs"}
_TOOLS = {Format.TAR_ZST: ["tar", "zstd"], Format.RAW: ["mkfs.ext4", "sfdisk", "dd"],
          Format.QCOW2: ["mkfs.ext4", "sfdisk", "dd", "qemu-img"], Format.SQUASHFS: ["mksquashfs"]}


@dataclass(frozen=True)
class ArtifactFile:
    format: Format
    path: Path
    size: int
    sha256: str


def check_tools(formats: list[Format]) -> None:
    for f in formats:
        for tool in _TOOLS[f]:
            command.need(tool)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += max(st.st_blocks * 512, 4096) if not os.path.islink(os.path.join(dirpath, name)) else 0
    return total


def pack(root: Path, out: Path, stem: str, formats: list[Format], disk_size: int | None,
         reporter) -> list[ArtifactFile]:  # type: ignore[no-untyped-def]
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    raw: Path | None = None
    for fmt in formats:
        with reporter.step(f"pack {fmt}"):
            dest = out / f"{stem}.{SUFFIX[fmt]}"
            if fmt is Format.TAR_ZST:
                pack_tar_zst(root, dest)
            elif fmt is Format.SQUASHFS:
                command.run(["mksquashfs", str(root), str(dest), "-noappend", "-comp", "zstd",
                             "-Xcompression-level", "6", "-processors", "2", "-quiet", "-no-progress"],
                            what="mksquashfs")
            else:
                if raw is None:
                    raw = out / f"{stem}.raw"
                    make_raw_disk(root, raw, disk_size, out)
                if fmt is Format.QCOW2:
                    command.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(dest)],
                                what="qemu-img convert")
            files.append(dest)
    if raw is not None and Format.RAW not in formats:
        raw.unlink(missing_ok=True)
    return [ArtifactFile(f, p, p.stat().st_size, sha256_of(p)) for f, p in zip(formats, files, strict=True)]


def pack_tar_zst(root: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    try:
        command.pipe(["tar", "-C", str(root), *TAR_OPTS, "--sort=name", "-cf", "-", "."],
                     ["zstd", "-q", "-3", "-T2", "-f", "-o", str(tmp)], what="packing tar.zst")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def make_raw_disk(root: Path, dest: Path, disk_size: int | None, work: Path) -> None:
    """A disk image with an MBR and one bootable ext4 partition filled from root (mkfs.ext4 -d)."""
    needed = tree_size(root)
    auto = _round_mib(int(needed * 1.3) + 128 * MiB + PART_OFFSET)
    size = _round_mib(disk_size) if disk_size else auto
    if size < needed + PART_OFFSET + 16 * MiB:
        raise RecipeError(f"disk_size: {size // MiB} MiB is too small for {needed // MiB} MiB of files",
                          hint=f"use at least {auto // MiB}M, or leave disk_size out")
    part = work / f".{dest.name}.part.ext4"
    part_size = size - PART_OFFSET
    try:
        with open(part, "wb") as f:
            f.truncate(part_size)
        command.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d", str(root),
                     str(part), f"{part_size // 1024}k"], what="mkfs.ext4")
        with open(dest, "wb") as f:
            f.truncate(size)
        command.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(dest)],
                    input=b"label: dos\nstart=2048, type=83, bootable\n", what="sfdisk")
        command.run(["dd", f"if={part}", f"of={dest}", "bs=1M", f"seek={PART_OFFSET // MiB}",
                     "conv=sparse,notrunc", "status=none"], what="dd")
    except BuildError as e:
        if "No space left" in e.message or "Could not allocate" in e.message:
            raise RecipeError(f"disk_size: {size // MiB} MiB is too small", hint=f"try {auto // MiB}M") from None
        raise
    finally:
        part.unlink(missing_ok=True)


def _round_mib(n: int) -> int:
    return (n + MiB - 1) // MiB * MiB
