"""Unpack an image into a directory safely, reporting unsafe members as vetting findings.

Archives (tar, tar.zst, tar.gz, tar.xz) go through rain.image.untar, member by
member and within bounds (see there). Disk images (raw, qcow2, squashfs) are
checked (no backing or external data files), mounted read-only and streamed
through the same unpacker. A directory given to `fg-image vet` is swept for the
same dangers in place.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from pathlib import Path

from rain.errors import InvalidInput
from rain.image import limits, untar
from rain.image.rootfs import walk_tree
from rain.image.untar import STANDARD_DEV
from rain.register import disk
from rain.register.models import RawFinding, Severity, UnpackFormat

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.zst", ".tar.zstd", ".tar.gz", ".tgz", ".tar.xz")


FORMATS = tuple(f.value for f in UnpackFormat)


def detect_format(path: Path, declared: str | None = None) -> str:
    if declared:
        if declared not in FORMATS:
            raise InvalidInput(f"cannot unpack images of format {declared!r}",
                               hint="supported formats: " + ", ".join(FORMATS))
        return declared
    if path.is_dir():
        return "dir"
    name = path.name.lower()
    for suffix, fmt in ((".tar.zst", "tar.zst"), (".tar.zstd", "tar.zst"), (".tar.gz", "tar.gz"),
                        (".tgz", "tar.gz"), (".tar.xz", "tar.xz"), (".tar", "tar"), (".qcow2", "qcow2"),
                        (".squashfs", "squashfs"), (".sqfs", "squashfs"), (".raw", "raw"), (".img", "raw")):
        if name.endswith(suffix):
            return fmt
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"QFI\xfb":
        return "qcow2"
    if head == b"hsqs":
        return "squashfs"
    if head == b"\x28\xb5\x2f\xfd":
        return "tar.zst"
    raise InvalidInput(f"cannot tell the format of {path}",
                       hint="name it .tar.zst, .raw, .qcow2 or .squashfs, or give its format")


def unpack(src: Path, dest: Path, fmt: str | None = None, max_size: int | None = None) -> list[RawFinding]:
    """Unpack `src` into the empty directory `dest`; return findings for what was refused.

    `max_size` bounds the unpacked tree (None: RATIO × the file's size + SLACK, see limits);
    past it, or past the free space, InvalidInput is raised and the caller removes `dest`.
    """
    fmt = detect_format(src, fmt)
    dest.mkdir(parents=True, exist_ok=True)
    limit, why = limits.expanded_limit(src.stat().st_size, dest, max_size)
    budget = limits.Budget(src, limit, why)
    if fmt.startswith("tar"):
        return untar.unpack_archive(src, fmt, dest, budget, lambda: untar.open_tar(src, fmt))
    if fmt in ("raw", "qcow2", "squashfs"):
        with disk.disk_tree(src, fmt) as tree, disk.tar_stream(tree) as stream:
            return untar.unpack_archive(src, fmt, dest, budget, lambda: untar.stream_tar(stream))
    raise InvalidInput(f"{src} is a directory; it needs no unpacking")


def sweep(root: Path, remove: bool = False) -> list[RawFinding]:
    """Report device nodes, FIFOs, sockets and escaping links in a tree (and remove them if asked).

    The walk is iterative and follows no link, so a tree of any depth ends.
    """
    findings: list[RawFinding] = []
    for inner, st in walk_tree(root):
        rel, full = inner.lstrip("/"), os.path.join(root, inner.lstrip("/"))
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            severity = Severity.INFO if rel in STANDARD_DEV and stat.S_ISCHR(st.st_mode) else None
            findings.append(RawFinding("device-node", (inner,), severity=severity))
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            findings.append(RawFinding("special-file", (inner,)))
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(full)
            if link.startswith("/") or not untar.escapes(
                    posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))):
                continue
            findings.append(RawFinding("link-outside", (f"{inner} -> {link}",)))
        else:
            continue
        if remove:
            os.unlink(full)
    return findings
