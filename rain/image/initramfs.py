"""What an image's initramfs holds, read without running anything from the image.

An initramfs is a chain of newc cpio archives: Debian's starts with an
uncompressed one (CPU microcode) and goes on with the main one, compressed
(zstd in bookworm; gzip, xz or lzma elsewhere). `listing` reads every segment
it can decompress and returns the paths in it. Reading is bounded (the file,
the decompressed bytes, the number of entries), so a crafted initramfs can
make it give up (None: "cannot tell") but never hang it or fill memory.
`missing_drivers` answers the register step's question: does the initramfs
already load what this cloud's first boot needs, so that no rebuild (no image
code) is wanted?
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import re
from collections.abc import Iterable, Iterator
from typing import Protocol

import zstandard

from rain.errors import InvalidInput
from rain.image.rootfs import RootFS

MAX_FILE = 512 << 20
"""A Debian initramfs with MODULES=most is 30–80 MiB; one bigger than this is not read."""
MAX_UNPACKED = 2 << 30
MAX_ENTRIES = 200_000
_HEADER = 110
_MODULE = re.compile(r"(?:^|/)lib/modules/(?P<kver>[^/]+)/.+/(?P<name>[^/]+)\.ko(?:\.(?:xz|zst|gz))?$")
log = logging.getLogger(__name__)


class _Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


class Unreadable(Exception):
    """The initramfs is not a cpio chain this reader can follow within its bounds."""


def listing(data: bytes) -> list[str] | None:
    """Every path in the initramfs `data`; None when it cannot be read (unknown compression, damage, bounds)."""
    try:
        return list(_segments(data))
    except (Unreadable, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError) as e:
        log.info("initramfs: cannot list it (%s)", e)
        return None


def _segments(data: bytes) -> Iterator[str]:
    pos = 0
    budget = _Budget()
    while pos < len(data):
        while pos < len(data) and data[pos] == 0:  # segments are padded with NULs
            pos += 1
        if pos >= len(data):
            return
        head = data[pos:pos + 6]
        if head in (b"070701", b"070702"):
            raw = io.BytesIO(data)
            raw.seek(pos)
            yield from _cpio(raw, budget)
            pos = raw.tell()
            continue
        stream = _decompressor(data[pos:])
        yield from _cpio(_Bounded(stream, budget), budget)
        return  # what follows a compressed segment is not located without decompressing it all; stop here


def _decompressor(data: bytes) -> _Reader:
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=io.BytesIO(data))
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(io.BytesIO(data), format=lzma.FORMAT_XZ)
    if data.startswith(b"\x5d\x00\x00"):
        return lzma.LZMAFile(io.BytesIO(data), format=lzma.FORMAT_ALONE)
    raise Unreadable(f"unknown compression (magic {data[:4].hex()})")


class _Budget:
    def __init__(self) -> None:
        self.unpacked = 0
        self.entries = 0


class _Bounded:
    """A decompressed stream that stops the reader past MAX_UNPACKED bytes."""

    def __init__(self, stream: _Reader, budget: _Budget) -> None:
        self.stream, self.budget = stream, budget

    def read(self, n: int) -> bytes:
        chunk = self.stream.read(n)
        self.budget.unpacked += len(chunk)
        if self.budget.unpacked > MAX_UNPACKED:
            raise Unreadable(f"more than {MAX_UNPACKED >> 30} GiB unpacked")
        return chunk


def _exactly(f: _Reader, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(min(n - len(out), 1 << 20))
        if not chunk:
            raise Unreadable("truncated cpio archive")
        out += chunk
    return out


def _skip(f: _Reader, n: int) -> None:
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            raise Unreadable("truncated cpio archive")
        n -= len(chunk)


def _cpio(f: _Reader, budget: _Budget) -> Iterator[str]:
    """The names in one newc archive, up to its TRAILER!!!; `f` is left just past the trailer's padding."""
    while True:
        header = _exactly(f, _HEADER)
        if header[:6] not in (b"070701", b"070702"):
            raise Unreadable("not a newc cpio header")
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise Unreadable("a cpio header with non-hex fields") from None
        size, namesize = fields[6], fields[11]
        if namesize == 0 or namesize > 4096:
            raise Unreadable(f"a cpio name of {namesize} bytes")
        name = _exactly(f, namesize).rstrip(b"\0").decode(errors="replace")
        _skip(f, -(_HEADER + namesize) % 4)
        if name == "TRAILER!!!":
            return
        budget.entries += 1
        if budget.entries > MAX_ENTRIES:
            raise Unreadable(f"more than {MAX_ENTRIES} entries")
        _skip(f, size + (-size % 4))
        yield name.removeprefix("./")


def module_names(paths: Iterable[str], kver: str) -> set[str]:
    """The kernel modules for `kver` among `paths`, by module name (dashes as underscores, as modprobe does)."""
    found = set()
    for p in paths:
        m = _MODULE.search(p)
        if m and m["kver"] == kver:
            found.add(_norm(m["name"]))
    return found


def builtin_modules(tree: RootFS, kver: str) -> set[str]:
    """The modules compiled into the kernel `kver` (its modules.builtin)."""
    text = tree.read_text(f"/lib/modules/{kver}/modules.builtin", limit=8 << 20) or ""
    return {_norm(line.strip().rsplit("/", 1)[-1].split(".ko")[0]) for line in text.splitlines() if line.strip()}


def available_modules(tree: RootFS, kver: str) -> set[str]:
    """The loadable modules the image has for `kver` (its modules.dep)."""
    text = tree.read_text(f"/lib/modules/{kver}/modules.dep", limit=32 << 20) or ""
    return {_norm(line.partition(":")[0].rsplit("/", 1)[-1].split(".ko")[0]) for line in text.splitlines()
            if ":" in line}


def missing_drivers(tree: RootFS, kver: str, initrd: str, wanted: Iterable[str]) -> list[str] | None:
    """The `wanted` drivers that the kernel `kver` cannot load from the initramfs `initrd` (built-ins count
    as present); None when the initramfs cannot be read (then only a rebuild can make sure)."""
    if not tree.is_regular(initrd):
        return None
    try:
        data = tree.read_file(initrd, MAX_FILE)
    except InvalidInput as e:  # too big, or swapped for something else meanwhile: cannot tell
        log.info("initramfs %s: %s", initrd, e)
        return None
    names = listing(data)
    if names is None:
        return None
    have = module_names(names, kver) | builtin_modules(tree, kver)
    return [m for m in wanted if _norm(m) not in have]


def _norm(name: str) -> str:
    return name.replace("-", "_")
