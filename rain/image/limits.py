"""Bounds on what an uploaded archive may cost the registrar: disk, entries, header memory, path depth.

An archive is a compressed stream, and a few KB of zstd can claim a terabyte of
zeros, a million empty files, or a pax header of gigabytes that tarfile would
read into memory whole. Every member is charged against a Budget *before* its
data is read or written, so a bomb stops with a one-line error after costing
at most its bound; tarfile's header parsing is capped by BoundedTarInfo.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from rain.errors import InvalidInput
from rain.sizes import human

RATIO = 20
"""Default bound: the archive may expand to RATIO × its own size + SLACK (OS trees compress 3-6×)."""
SLACK = 256 << 20
FREE_MARGIN = 256 << 20
"""Never unpack into the last FREE_MARGIN bytes of the file system: the registrar still has to pack."""
MAX_ENTRIES = 5_000_000
"""A full Debian desktop has about 400k files."""
MAX_HEADER = 1 << 20
"""Largest pax or GNU long-name header; real ones (paths, xattrs, ACLs) are a few KB."""
MAX_CHAIN = 8
"""Extended headers in front of one member (pax + GNU longname + longlink is 3)."""
MAX_SPARSE = 65_536
"""Regions in one sparse file's map."""
MAX_DEPTH = 128
"""Directories in one member's path; deeper trees break the tools that later walk them."""
PATH_MAX = 4096
MAX_ENTRY_XATTRS = 32
"""Extended attributes kept on one entry; a Debian file has one or two (security.capability, user.*)."""
MAX_ENTRY_XATTR_BYTES = 64 << 10
"""Names and values kept on one entry: the kernel's bound for one value (XATTR_SIZE_MAX); ext4 takes 4 KiB."""
MAX_XATTR_BYTES = 64 << 20
"""All attributes kept in one image: a Debian tree with user.* on every file has ~20 MiB; more is a bomb."""
DIR_COST = 4096
"""What a directory costs on disk (one block); other entries cost a 512-byte header."""
BLOCKSIZE = tarfile.BLOCKSIZE
_nti = tarfile.nti  # type: ignore[attr-defined]
HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK)


class HeaderBound(Exception):
    """Raised from inside tarfile's header parsing; the unpacker turns it into InvalidInput naming the archive."""


def expanded_limit(size: int | None, dest: Path, configured: int | None) -> tuple[int, str]:
    """How many bytes the archive of `size` bytes (None: a stream) may unpack to, and why (for the error)."""
    if configured is not None:
        limit, why = configured, "unpack_max"
    elif size is None:
        limit, why = 1 << 62, ""
    else:
        limit, why = RATIO * size + SLACK, f"{RATIO} × the archive's {human(size)} + {human(SLACK)}"
    st = os.statvfs(dest)
    free = st.f_bavail * st.f_frsize - FREE_MARGIN
    if free < limit:
        limit, why = max(free, 0), f"the free space in {dest} less {human(FREE_MARGIN)}"
    return limit, why


class Budget:
    """Charges every entry (refused or not) before its data is touched; raises once a bound is passed."""

    def __init__(self, src: Path, limit: int, why: str) -> None:
        self.src, self.limit, self.why = src, limit, why
        self.used = 0
        self.entries = 0
        self.xattr_bytes = 0

    def member(self, m: tarfile.TarInfo) -> None:
        if m.size < 0:
            raise InvalidInput(f"{self.src} is a damaged archive: member {m.name!r} has a negative size",
                               hint="re-create the image or upload it again")
        data = m.size if m.isreg() or m.type not in tarfile.SUPPORTED_TYPES else 0
        self.charge(DIR_COST if m.isdir() else 512 + -(-data // 512) * 512)

    def charge(self, cost: int) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise InvalidInput(f"{self.src.name} has more than {MAX_ENTRIES} entries",
                               hint="an OS image has far fewer files; this looks like an archive bomb")
        self._use(cost)

    def xattrs(self, size: int) -> None:
        """Charge the extended attributes kept on one entry: they take disk space, and there is a cap of
        their own, because a million small headers each carrying 64 KiB fit in a modest archive."""
        self.xattr_bytes += size
        if self.xattr_bytes > MAX_XATTR_BYTES:
            raise InvalidInput(f"{self.src.name} carries more than {human(MAX_XATTR_BYTES)} of extended attributes",
                               hint="an OS image has far less; this looks like an archive bomb")
        self._use(size)

    def _use(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise InvalidInput(f"{self.src.name} unpacks to more than {human(self.limit)} ({self.why})",
                               hint="if the image is genuine, raise unpack_max (RAIN_UNPACK_MAX) or free disk "
                                    "space; otherwise it is an archive bomb")


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header reader with caps: header size, headers chained before a member, sparse map length.

    tarfile reads a pax or GNU long-name header whole (a 4 KB zstd stream can
    declare 8 GiB), recurses once per chained header (a long chain is a
    RecursionError) and grows sparse maps without end; each is checked here
    before tarfile allocates anything. Call `reset(tf)` after every member.
    """

    def _proc_member(self, tf: Any) -> Any:
        if self.type in HEADER_TYPES:
            if self.size > MAX_HEADER:
                raise HeaderBound(f"has a {_kind(self.type)} header of {human(self.size)} "
                                  f"(at most {human(MAX_HEADER)})")
            depth = getattr(tf, "_rain_chain", 0) + 1
            if depth > MAX_CHAIN:
                raise HeaderBound(f"has a chain of more than {MAX_CHAIN} extended headers before one member")
            tf._rain_chain = depth
        return super()._proc_member(tf)  # type: ignore[misc]

    def _proc_sparse(self, tf: Any) -> Any:
        """Old GNU sparse: the map goes on in extension blocks; read them here, counting, then let tarfile finish."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined,has-type]
        while isextended:
            buf = tf.fileobj.read(BLOCKSIZE)
            if len(buf) < BLOCKSIZE:
                raise tarfile.ReadError("unexpected end of data in a sparse map")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = _nti(buf[pos:pos + 12]), _nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            if len(structs) > MAX_SPARSE:
                raise HeaderBound(f"has a sparse file with more than {MAX_SPARSE} regions")
            isextended = bool(buf[504])
        self._sparse_structs = (structs, False, origsize)  # type: ignore[attr-defined]
        return super()._proc_sparse(tf)  # type: ignore[misc]

    def _proc_gnusparse_10(self, next: Any, pax_headers: Any, tf: Any) -> None:
        """GNU sparse 1.0: the map is a count then numbers, one a line, in whole blocks before the data."""
        buf = b""
        numbers: list[int] = []
        count: int | None = None
        while count is None or len(numbers) < count * 2:
            while b"\n" not in buf:
                block = tf.fileobj.read(BLOCKSIZE)
                if len(buf) > 32 or not block:
                    raise HeaderBound("has a sparse file with a malformed map")
                buf += block
            line, buf = buf.split(b"\n", 1)
            if not line.isdigit():
                raise HeaderBound("has a sparse file with a malformed map")
            if count is None:
                count = int(line)
                if count > MAX_SPARSE:
                    raise HeaderBound(f"has a sparse file with more than {MAX_SPARSE} regions")
            else:
                numbers.append(int(line))
        next.offset_data = tf.fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))


def reset(tf: tarfile.TarFile) -> None:
    """Start counting chained headers afresh for the next member."""
    tf._rain_chain = 0  # type: ignore[attr-defined]


def _kind(type: bytes) -> str:
    return "GNU long-name" if type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "pax"
