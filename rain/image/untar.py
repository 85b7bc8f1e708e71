"""Unpack a tar stream that someone else made, member by member, without letting it touch the host.

Used by everything that reads an untrusted tree: the registrar (uploaded images),
a clone's base image and a builder VM's result. Nothing is written outside the
root, no device node or FIFO is created, no link that escapes the root is made,
no write goes through a link (every path is reached from the root's descriptor
with O_NOFOLLOW, see extract), and size, entries, header memory and depth are
bounded (see limits). File capabilities, POSIX ACLs and user.* attributes are
kept (see xattrs). What is refused comes back as findings; the caller decides
what each means (a vetting report, or a failed clone).
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import zstandard

from rain.errors import InvalidInput, one_line
from rain.image import extract, limits
from rain.image.findings import RawFinding, Severity

STANDARD_DEV = {"dev/null", "dev/zero", "dev/full", "dev/random", "dev/urandom", "dev/tty",
                "dev/console", "dev/ptmx"}
READ_ERRORS = (tarfile.TarError, EOFError, ValueError, OverflowError, zstandard.ZstdError, zlib.error,
               lzma.LZMAError)


def unpack_stream(stream: IO[bytes], dest: Path, label: str, max_size: int | None = None,
                  layer: bool = False) -> list[RawFinding]:
    """Unpack a plain tar stream with the same checks and bounds; a stream has no size, so only `max_size`
    and the free space bound it. For the other readers of untrusted trees (a clone's base image, a builder's
    result), which decide themselves what each finding means; errors name the stream as `label`. With
    `layer`, the stream is an overlayfs upper layer laid over what dest holds (see extract)."""
    dest.mkdir(parents=True, exist_ok=True)
    limit, why = limits.expanded_limit(None, dest, max_size)
    budget = limits.Budget(Path(label), limit, why)
    return unpack_archive(Path(label), "tar", dest, budget, lambda: stream_tar(stream), layer)


def stream_tar(stream: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r|", tarinfo=limits.BoundedTarInfo)


def open_tar(src: Path, fmt: str) -> tarfile.TarFile:
    if fmt == "tar.zst":
        return stream_tar(zstandard.ZstdDecompressor().stream_reader(open(src, "rb"), closefd=True,
                                                                    read_across_frames=True))
    return tarfile.open(src, mode="r|*", tarinfo=limits.BoundedTarInfo)


def escapes(path: str) -> bool:
    return path == ".." or path.startswith("../")


def unpack_archive(src: Path, fmt: str, dest: Path, budget: limits.Budget,
                    opener: Callable[[], tarfile.TarFile], layer: bool = False) -> list[RawFinding]:
    """Read the archive one member at a time (tarfile.TarFile.next, so tarfile keeps no list of members)."""
    damaged = f"{src} is a damaged {fmt} archive"
    try:
        with _reading(src, damaged):
            tf = opener()
        with tf:
            tree = extract.Tree(dest, lambda: budget.charge(limits.DIR_COST))
            try:
                return _members(src, damaged, tf, extract.Extractor(tree, tf, budget, layer), budget,
                                os.path.realpath(dest), layer)
            finally:
                tree.close()
    except OSError as e:
        raise InvalidInput(f"cannot unpack {src.name} into {dest}: {e.strerror or e}",
                           hint="check the free space and permissions there") from e


def _members(src: Path, damaged: str, tf: tarfile.TarFile, place: extract.Extractor,
             budget: limits.Budget, real_dest: str, layer: bool = False) -> list[RawFinding]:
    findings: list[RawFinding] = []
    while True:
        with _reading(src, damaged):
            m = tf.next()
        tf.members.clear()  # type: ignore[attr-defined]  # tarfile's private list, or it grows per member
        limits.reset(tf)
        if m is None:
            break
        budget.member(m)
        norm, problem = _check_member(m, real_dest, damaged, layer)
        if problem is None:
            with _reading(src, damaged), _creating(src, m):
                problem = place.place(m, norm)
        if problem is not None:
            findings.append(problem)
    return findings + place.finish()


@contextlib.contextmanager
def _reading(src: Path, damaged: str) -> Iterator[None]:
    """Errors of the compressed stream or tarfile's parser: the archive is damaged (or crafted)."""
    try:
        yield
    except limits.HeaderBound as e:
        raise InvalidInput(f"{src.name} {e}", hint="an OS image has no such headers; this looks like an archive bomb"
                           ) from None
    except READ_ERRORS as e:
        raise InvalidInput(f"{damaged}: {one_line(e)}", hint="re-create the image or upload it again") from e


@contextlib.contextmanager
def _creating(src: Path, m: tarfile.TarInfo) -> Iterator[None]:
    """A member the file system will not take (a name too long, an empty link target) ends the unpack."""
    try:
        yield
    except extract.NotADirectory as e:
        raise InvalidInput(f"{src.name}: member {_shown(m.name)} lies below {_shown(e.where)}, not a directory",
                           hint="re-create the archive from inside the root (tar -C ROOT .)") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InvalidInput(f"{src.name}: cannot unpack member {_shown(m.name)}: {e.strerror or e}",
                           hint="re-create the archive from inside the root (tar -C ROOT .)") from e


def _check_member(m: tarfile.TarInfo, real_dest: str, damaged: str,
                  layer: bool = False) -> tuple[str, RawFinding | None]:
    """Judge a member by its header alone: what may be placed, and as which image path (a layer's
    whiteouts too: the extractor removes, never creates, them)."""
    name = m.name
    if "\0" in name or "\0" in m.linkname:
        raise InvalidInput(f"{damaged}: member {_shown(name)} has a NUL byte in its name",
                           hint="re-create the image or upload it again")
    norm = posixpath.normpath(name) if name else "."
    _check_length(norm, real_dest, damaged)
    if name.startswith("/") or escapes(norm):
        return norm, RawFinding("archive-escape", ("/" + name.lstrip("/") if name.startswith("/") else name,))
    if norm == ".":
        return norm, None if m.isdir() else RawFinding("archive-escape", ("/ (replaces the root)",))
    if layer and extract.is_whiteout(m):
        return norm, None
    if m.ischr() or m.isblk():
        severity = Severity.INFO if norm in STANDARD_DEV and m.ischr() else None
        return norm, RawFinding("device-node", ("/" + norm,), severity=severity)
    if m.isfifo():
        return norm, RawFinding("special-file", ("/" + norm,))
    if m.issym() and not m.linkname.startswith("/") and escapes(
            posixpath.normpath(posixpath.join(posixpath.dirname(norm), m.linkname))):
        return norm, RawFinding("link-outside", (f"/{norm} -> {m.linkname}",))
    if m.islnk():
        link = posixpath.normpath(m.linkname) if m.linkname else "."
        if m.linkname.startswith("/") or escapes(link) or link == ".":
            return norm, RawFinding("link-outside", (f"/{norm} => {m.linkname}",))
    return norm, None


def _check_length(norm: str, real_dest: str, damaged: str) -> None:
    """Paths the tools that later walk the tree (and remove it) can still handle."""
    if len(os.fsencode(real_dest)) + 1 + len(os.fsencode(norm)) >= limits.PATH_MAX:
        raise InvalidInput(f"{damaged}: member {_shown(norm)} has a path longer than {limits.PATH_MAX} bytes",
                           hint="re-create the image or upload it again")
    if norm.count("/") >= limits.MAX_DEPTH:
        raise InvalidInput(f"{damaged}: member {_shown(norm)} is nested more than {limits.MAX_DEPTH} deep",
                           hint="re-create the image or upload it again")


def _shown(name: str) -> str:
    """A member name for a one-line error: quoted (control characters escaped) and cut short."""
    return repr(name[:80]) + ("..." if len(name) > 80 else "")
