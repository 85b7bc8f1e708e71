"""Raw, qcow2 and squashfs images read back in safely, by the plain tools.

Whole disks are made by rain.image.disk, and qcow2/squashfs by rain.image.formats (one maker each for
generate and register).

Every tool is run as an argv list; a failure becomes a Rain error naming the
tool and the last lines it printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rain.errors import BuildError, InvalidInput
from rain.host.tools import run, tool

MAX_VIRTUAL_SIZE = 1 << 40
"""Largest qcow2 virtual size Rain converts (the sparse raw copy can grow up to it); OS images are 2-64 GiB."""
FREE_MARGIN = 256 << 20
PROBE_TIMEOUT = 30.0  # qemu-img info, sfdisk: they read headers only
MOUNT_TIMEOUT = 120.0
CONVERT_TIMEOUT = 3600.0
_HEADER_READ = 64 << 10  # the qcow2 header and its extensions live in the first cluster
_QCOW2_EXTERNAL_DATA = 1 << 2  # incompatible feature bit: clusters live in another file
_QCOW2_DATA_FILE_EXT = 0x44415441  # header extension holding that file's name
_EXTENDED = {"5", "f", "85", "0x5", "0xf", "0x85"}  # DOS extended partitions hold partitions, not a file system
_DAMAGED = "the partition table is damaged; re-create the image (fg-image generate) or upload the root as tar.zst"
_FLATTEN = "flatten it first (qemu-img convert -O qcow2 IN OUT, without -B) and upload the result"
_SHRINK = "shrink the disk (qemu-img resize --shrink) or upload the root as tar.zst"
def _partition(raw: Path) -> tuple[int, int | None]:
    """(offset, size) in bytes of the root partition (the biggest), checked to lie inside the file so a
    hostile table cannot point the loop mount past the end or at the table; (0, None): a bare file system."""
    try:
        out = run(["sfdisk", "--json", str(raw)], f"reading the partition table of {raw.name}", InvalidInput,
                  timeout=PROBE_TIMEOUT)
    except InvalidInput as e:
        if "does not contain a recognized partition table" in e.message:
            return 0, None
        raise
    try:
        table = json.loads(out)["partitiontable"]
        parts = [p for p in table.get("partitions", []) if str(p.get("type", "")).lower() not in _EXTENDED]
        sector = table.get("sectorsize", 512)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInput(f"{raw.name}: sfdisk printed a partition table Rain cannot read ({e})",
                           hint=_DAMAGED) from e
    if not parts:
        raise InvalidInput(f"{raw.name} has a partition table with no partition to mount", hint=_DAMAGED)
    if sector not in (512, 1024, 2048, 4096):
        raise InvalidInput(f"{raw.name}: the partition table claims {sector}-byte sectors", hint=_DAMAGED)
    number, part = max(enumerate(parts, start=1), key=lambda np: _int(np[1].get("size")))
    start, count, size = _int(part.get("start")), _int(part.get("size")), raw.stat().st_size
    if start < 1 or count < 1 or (start + count) * sector > size:
        raise InvalidInput(f"{raw.name}: partition {number} (sectors {start} to {start + count}) lies beyond the "
                           f"end of the {_human(size)} image", hint=_DAMAGED)
    return start * sector, count * sector


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _qcow2_spec(src: Path) -> str:
    """qemu's json: name for `src` as a qcow2 whose backing file is forced off, so even a backing file the
    checks missed is never opened, and whose file name is taken literally (no 'nbd:' style protocols)."""
    return "json:" + json.dumps({"driver": "qcow2", "backing": None,
                                 "file": {"driver": "file", "filename": os.path.abspath(src)}})


def _qcow2_header(src: Path) -> None:
    """Refuse, from the header alone (before qemu opens anything), a qcow2 that reads other files."""
    with open(src, "rb") as f:
        head = f.read(_HEADER_READ)
        if len(head) < 72 or head[:4] != b"QFI\xfb":
            raise InvalidInput(f"{src.name} is not a qcow2 image", hint="give its real format")
        version, backing_at, backing_len = struct.unpack(">IQI", head[4:20])
        if backing_at:
            f.seek(backing_at)
            name = f.read(min(backing_len, 1023)).decode(errors="replace")
            raise InvalidInput(f"{src.name} has a backing file ({name}); Rain refuses qcow2 images that read "
                               "other files", hint=_FLATTEN)
    (crypt,) = struct.unpack(">I", head[32:36])
    if crypt:
        raise InvalidInput(f"{src.name} is an encrypted qcow2", hint="upload it unencrypted")
    if version >= 3 and len(head) >= 104:
        (incompatible,) = struct.unpack(">Q", head[72:80])
        if incompatible & _QCOW2_EXTERNAL_DATA:
            raise InvalidInput(f"{src.name} has an external data file ({_data_file_name(head)}); Rain refuses "
                               "qcow2 images that read other files", hint=_FLATTEN)


def _data_file_name(head: bytes) -> str:
    """The external data file's name from the header extensions (for the error message only)."""
    (pos,) = struct.unpack(">I", head[100:104])
    while pos + 8 <= len(head):
        kind, length = struct.unpack(">II", head[pos:pos + 8])
        if kind == 0:
            break
        if kind == _QCOW2_DATA_FILE_EXT:
            return head[pos + 8:pos + 8 + length].decode(errors="replace")
        pos += 8 + (length + 7) // 8 * 8
    return "name not recorded"


def check_qcow2(src: Path, scratch: Path) -> int:
    """Vet a qcow2 before it is read: no backing or external data file, a virtual size within
    MAX_VIRTUAL_SIZE and within the free space of `scratch`; returns the virtual size."""
    _qcow2_header(src)
    out = run(["qemu-img", "info", "--output=json", "-f", "qcow2", _qcow2_spec(src)], f"inspecting {src.name}",
              InvalidInput, timeout=PROBE_TIMEOUT)
    try:
        info = json.loads(out)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"inspecting {src.name}: qemu-img printed no JSON ({e})") from e
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        raise InvalidInput(f"{src.name} has a backing file ({backing}); Rain refuses qcow2 images that read "
                           "other files", hint=_FLATTEN)
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if data_file:
        raise InvalidInput(f"{src.name} has an external data file ({data_file}); Rain refuses qcow2 images "
                           "that read other files", hint=_FLATTEN)
    virtual = int(info.get("virtual-size", 0))
    if virtual > MAX_VIRTUAL_SIZE:
        raise InvalidInput(f"{src.name} has a virtual size of {_human(virtual)}, more than the "
                           f"{_human(MAX_VIRTUAL_SIZE)} Rain converts", hint=_SHRINK)
    st = os.statvfs(scratch)
    free = st.f_bavail * st.f_frsize - FREE_MARGIN
    if virtual > free:
        raise InvalidInput(f"{src.name} has a virtual size of {_human(virtual)}; converting it may write that "
                           f"much to {scratch}, which has {_human(max(free, 0))} free",
                           hint="free space there or point TMPDIR at a larger file system; " + _SHRINK)
    return virtual


@contextlib.contextmanager
def mounted(image: Path, fstype: str, offset: int = 0, size: int | None = None) -> Iterator[Path]:
    """Mount a file system image read-only on a loop device; unmounted (and the loop freed) on exit."""
    with tempfile.TemporaryDirectory(prefix="rain-mnt-") as mnt:
        opts = f"ro,loop,nodev,nosuid,noexec,offset={offset}" + (f",sizelimit={size}" if size else "")
        run(["mount", "-t", fstype, "-o", opts, str(image), mnt], f"mounting {image.name}", InvalidInput,
            timeout=MOUNT_TIMEOUT)
        try:
            yield Path(mnt)
        finally:
            run(["umount", mnt], f"unmounting {image.name}", timeout=MOUNT_TIMEOUT)


@contextlib.contextmanager
def tar_stream(tree: Path) -> Iterator[IO[bytes]]:
    """GNU tar's view of a mounted tree, as a stream for the safe unpacker.

    tar's complaints go to a file, not a pipe nobody reads while the stream is
    read (a tree with many unreadable files would fill it and hang both). If
    the reader stops early (a bound, a damaged member), its error is the one
    that counts: tar is ended and its SIGPIPE is not reported.
    """
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([tool("tar"), "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", "-", "."],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code not in (0, 1):  # 1: a file changed while read; the mount is read-only
            errors.seek(0)
            err = errors.read().decode(errors="replace")[-300:]
            raise BuildError(f"reading {tree} with tar failed: {err}")


@contextlib.contextmanager
def disk_tree(src: Path, fmt: str) -> Iterator[Path]:
    """The root file system inside a raw/qcow2/squashfs image, mounted read-only.

    A qcow2 is checked (check_qcow2) and converted to a sparse raw file with its backing forced off."""
    with tempfile.TemporaryDirectory(prefix="rain-disk-") as tmp:
        image, offset, size, fstype = src, 0, None, "squashfs"
        if fmt == "qcow2":
            check_qcow2(src, Path(tmp))
            image = Path(tmp) / "disk.raw"
            run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k", _qcow2_spec(src), str(image)],
                f"reading {src.name}", InvalidInput, timeout=CONVERT_TIMEOUT)
        if fmt in ("raw", "qcow2"):
            (offset, size), fstype = _partition(image), "ext4"
        with mounted(image, fstype, offset, size) as mnt:
            yield mnt
