"""Disk formats by the plain tools: raw (partition table + ext4), qcow2, squashfs; both directions.

Every tool is run as an argv list; a failure becomes a Rain error naming the
tool and the last lines it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rain.errors import BuildError, InvalidInput, ToolMissing

PART_OFFSET = 1 << 20  # first partition starts at 1 MiB
ROOT_LABEL = "rain-root"
_APT = {"qemu-img": "qemu-utils", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
        "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "sfdisk": "fdisk",
        "qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise ToolMissing(f"{name} is not installed", hint=f"apt-get install {_APT.get(name, name)} "
                          "(or run scripts/setup.sh)")
    return found


def run(argv: list[str], what: str, error: type[Exception] = BuildError, input: bytes | None = None,
        timeout: float | None = None) -> str:
    argv = [tool(argv[0]), *argv[1:]]
    try:
        proc = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise error(f"{what}: {os.path.basename(argv[0])} took longer than {timeout}s") from e
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise error(f"{what}: {os.path.basename(argv[0])} failed (exit {proc.returncode}): {tail}")
    return proc.stdout.decode(errors="replace")


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += max(os.lstat(os.path.join(dirpath, name)).st_blocks * 512, 4096)
            except OSError:
                pass
    return total


def make_raw(root: Path, out: Path, label: str = ROOT_LABEL) -> Path:
    """A sparse disk image: MBR with one Linux partition at 1 MiB holding an ext4 copy of `root`."""
    fs_bytes = int(tree_size(root) * 1.25) + (256 << 20)
    fs_bytes = (fs_bytes + (1 << 20) - 1) // (1 << 20) * (1 << 20)
    with open(out, "wb") as f:
        f.truncate(PART_OFFSET + fs_bytes)
    run(["sfdisk", "--quiet", str(out)], "partitioning the raw image",
        input=b"label: dos\nstart=2048, type=83, bootable\n")
    run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", f"offset={PART_OFFSET}", "-d", str(root), str(out),
         f"{fs_bytes // 1024}k"], "writing the ext4 file system")
    return out


def to_qcow2(raw: Path, out: Path) -> Path:
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(out)],
        "converting to qcow2")
    return out


def make_squashfs(root: Path, out: Path) -> Path:
    run(["mksquashfs", str(root), str(out), "-noappend", "-comp", "zstd", "-quiet", "-no-progress",
         "-processors", str(max(1, os.cpu_count() or 1))], "packing the squashfs")
    return out


def _partition_offset(raw: Path) -> int:
    try:
        table = json.loads(run(["sfdisk", "--json", str(raw)], "reading the partition table"))
    except (BuildError, json.JSONDecodeError):
        return 0  # no partition table: a bare file system
    parts = table.get("partitiontable", {}).get("partitions", [])
    if not parts:
        return 0
    sector = table["partitiontable"].get("sectorsize", 512)
    biggest = max(parts, key=lambda p: p.get("size", 0))
    return int(biggest["start"]) * sector


def extract_disk(src: Path, dest: Path, fmt: str) -> None:
    """Copy the largest partition's ext2/3/4 file system out of a raw or qcow2 image into dest."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".disk-") as tmp:
        raw = src
        if fmt == "qcow2":
            raw = Path(tmp) / "disk.raw"
            run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(src), str(raw)],
                "reading the qcow2 image", InvalidInput)
        offset = _partition_offset(raw)
        fs = Path(tmp) / "fs.img"
        with open(raw, "rb") as f_in, open(fs, "wb") as f_out:
            f_in.seek(offset)
            _sparse_copy(f_in, f_out)
        run(["debugfs", "-R", f"rdump / {dest}", str(fs)], "reading the ext4 file system", InvalidInput)
        # rdump writes dest/<root dir name>; '/' dumps into dest itself on e2fsprogs >= 1.46
        if not any(dest.iterdir()):
            raise InvalidInput(f"{src} holds no ext2/3/4 file system Rain can read",
                               hint="upload a tar.zst rootfs, or a raw/qcow2 image with an ext4 root")


def _sparse_copy(f_in, f_out, chunk: int = 1 << 20) -> None:
    zero = bytes(chunk)
    while True:
        block = f_in.read(chunk)
        if not block:
            break
        if block == zero[: len(block)]:
            f_out.seek(len(block), os.SEEK_CUR)
        else:
            f_out.write(block)
    f_out.truncate()


def extract_squashfs(src: Path, dest: Path) -> None:
    dest.rmdir()
    run(["unsquashfs", "-quiet", "-no-progress", "-d", str(dest), str(src)], "reading the squashfs",
        InvalidInput)
