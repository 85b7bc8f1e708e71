"""Disk formats by the plain tools: raw (partition table + ext4), qcow2, squashfs; both directions.

Every tool is run as an argv list; a failure becomes a Rain error naming the
tool and the last lines it printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
         "-m", "2", "-W", str(raw), str(out)],
        "converting to qcow2")
    return out


def make_squashfs(root: Path, out: Path) -> Path:
    run(["mksquashfs", str(root), str(out), "-noappend", "-comp", "zstd", "-Xcompression-level", "3",
         "-quiet", "-no-progress", "-processors", str(max(1, os.cpu_count() or 1))], "packing the squashfs")
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


@contextlib.contextmanager
def mounted(image: Path, fstype: str, offset: int = 0) -> Iterator[Path]:
    """Mount a file system image read-only on a loop device; unmounted (and the loop freed) on exit."""
    with tempfile.TemporaryDirectory(prefix="rain-mnt-") as mnt:
        opts = f"ro,loop,nodev,nosuid,noexec,offset={offset}"
        run(["mount", "-t", fstype, "-o", opts, str(image), mnt], f"mounting {image.name}", InvalidInput)
        try:
            yield Path(mnt)
        finally:
            run(["umount", mnt], f"unmounting {image.name}")


@contextlib.contextmanager
def tar_stream(tree: Path) -> Iterator[IO[bytes]]:
    """GNU tar's view of a mounted tree, as a stream for the safe unpacker."""
    proc = subprocess.Popen([tool("tar"), "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", "-", "."],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()
        if proc.wait() not in (0, 1):  # 1: a file changed while read; the mount is read-only
            err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
            raise BuildError(f"reading {tree} with tar failed: {err}")


@contextlib.contextmanager
def disk_tree(src: Path, fmt: str) -> Iterator[Path]:
    """The root file system inside a raw/qcow2/squashfs image, mounted read-only."""
    with tempfile.TemporaryDirectory(prefix="rain-disk-") as tmp:
        image, offset, fstype = src, 0, "squashfs"
        if fmt == "qcow2":
            image = Path(tmp) / "disk.raw"
            run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(src), str(image)],
                "reading the qcow2 image", InvalidInput)
        if fmt in ("raw", "qcow2"):
            offset, fstype = _partition_offset(image), "ext4"
        with mounted(image, fstype, offset) as mnt:
            yield mnt
