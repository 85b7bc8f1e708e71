"""Unpack an image into a directory safely, reporting unsafe members as vetting findings.

Archives (tar, tar.zst, tar.gz, tar.xz) are read member by member: nothing is
written outside the root, no device node is created, no link that escapes the
root is made, and no write goes through a link. Disk images (raw, qcow2,
squashfs) are mounted read-only and streamed through the same member checks.
A directory given to `fg-image vet` is swept for the same dangers in place.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import tarfile
from pathlib import Path

import zstandard

from rain.errors import InvalidInput
from rain.register import disk
from rain.register.models import RawFinding, Severity

log = logging.getLogger(__name__)

STANDARD_DEV = {"dev/null", "dev/zero", "dev/full", "dev/random", "dev/urandom", "dev/tty",
                "dev/console", "dev/ptmx"}
TAR_SUFFIXES = (".tar", ".tar.zst", ".tar.zstd", ".tar.gz", ".tgz", ".tar.xz")
FORMATS = ("tar.zst", "tar", "tar.gz", "tar.xz", "raw", "qcow2", "squashfs", "dir")


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


def unpack(src: Path, dest: Path, fmt: str | None = None) -> list[RawFinding]:
    """Unpack `src` into the empty directory `dest`; return findings for what was refused."""
    fmt = detect_format(src, fmt)
    dest.mkdir(parents=True, exist_ok=True)
    if fmt.startswith("tar"):
        return unpack_tar(src, dest, fmt)
    if fmt in ("raw", "qcow2", "squashfs"):
        with disk.disk_tree(src, fmt) as tree, disk.tar_stream(tree) as stream:
            return unpack_tar(src, dest, fmt, tarfile.open(fileobj=stream, mode="r|"))
    raise InvalidInput(f"{src} is a directory; it needs no unpacking")


def _open_tar(src: Path, fmt: str) -> tarfile.TarFile:
    if fmt == "tar.zst":
        stream = zstandard.ZstdDecompressor().stream_reader(open(src, "rb"), closefd=True)
        return tarfile.open(fileobj=stream, mode="r|")
    return tarfile.open(src, mode="r|*")


def _escapes(path: str) -> bool:
    return path == ".." or path.startswith("../")


def unpack_tar(src: Path, dest: Path, fmt: str, tf: tarfile.TarFile | None = None) -> list[RawFinding]:
    findings: list[RawFinding] = []
    real_dest = os.path.realpath(dest)
    try:
        tf = tf or _open_tar(src, fmt)
    except (tarfile.TarError, OSError, zstandard.ZstdError) as e:
        raise InvalidInput(f"{src} is not a readable {fmt} archive: {e}") from e
    with tf:
        try:
            for member in tf:
                problem = _check_member(member, real_dest)
                if problem is not None:
                    findings.append(problem)
                    continue
                target = os.path.join(real_dest, posixpath.normpath(member.name))
                if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target)):
                    if os.path.isdir(target) and not os.path.islink(target):
                        findings.append(RawFinding("archive-escape", (member.name,), "replaces a directory"))
                        continue
                    os.unlink(target)  # never write through a link left by an earlier member
                tf.extract(member, real_dest, set_attrs=True, numeric_owner=True, filter="fully_trusted")
        except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as e:
            raise InvalidInput(f"{src} is a damaged {fmt} archive: {e}",
                               hint="re-create the image or upload it again") from e
    return findings


def _check_member(m: tarfile.TarInfo, real_dest: str) -> RawFinding | None:
    name = m.name
    if name.startswith("/") or _escapes(posixpath.normpath(name)):
        return RawFinding("archive-escape", ("/" + name.lstrip("/") if name.startswith("/") else name,))
    norm = posixpath.normpath(name)
    if norm == ".":
        return None
    if m.ischr() or m.isblk():
        severity = Severity.INFO if norm in STANDARD_DEV and m.ischr() else None
        return RawFinding("device-node", ("/" + norm,), severity=severity)
    if m.issym():
        if not m.linkname.startswith("/") and _escapes(
                posixpath.normpath(posixpath.join(posixpath.dirname(norm), m.linkname))):
            return RawFinding("link-outside", (f"/{norm} -> {m.linkname}",))
    if m.islnk():
        link = posixpath.normpath(m.linkname.lstrip("/"))
        if _escapes(link) or not _inside(os.path.join(real_dest, link), real_dest):
            return RawFinding("link-outside", (f"/{norm} => {m.linkname}",))
    parent = os.path.join(real_dest, posixpath.dirname(norm))
    if not _inside(parent, real_dest):
        return RawFinding("link-outside", (f"/{norm} (written through a link leaving the root)",))
    return None


def _inside(path: str, real_dest: str) -> bool:
    real = os.path.realpath(path)
    return real == real_dest or real.startswith(real_dest + os.sep)


def sweep(root: Path, remove: bool = False) -> list[RawFinding]:
    """Report device nodes and escaping links in a tree (and remove them if asked)."""
    findings: list[RawFinding] = []
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = full[len(base):].lstrip("/")
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                severity = Severity.INFO if rel in STANDARD_DEV and stat.S_ISCHR(st.st_mode) else None
                findings.append(RawFinding("device-node", ("/" + rel,), severity=severity))
                if remove:
                    os.unlink(full)
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(full)
                if not link.startswith("/") and _escapes(
                        posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))):
                    findings.append(RawFinding("link-outside", (f"/{rel} -> {link}",)))
                    if remove:
                        os.unlink(full)
    return findings
