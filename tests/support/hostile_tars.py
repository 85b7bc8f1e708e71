"""Hand-made hostile tar archives and a canary tree outside the unpack root, for the unpacker tests.

The canary is a directory beside (never inside) the destination; a snapshot
records what an attack through a link would change: mode, owner, mtime, link
count and content hash of every entry.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import zstandard

Snapshot = dict[str, tuple[int, int, int, int, int, str]]


def make_canary(base: Path) -> Path:
    """A host directory an unsafe unpacker could reach: a private file, a directory, a nested file."""
    canary = base / "canary"
    (canary / "dir").mkdir(parents=True)
    (canary / "secret").write_bytes(b"host secret\n")
    (canary / "dir" / "inner").write_bytes(b"inner\n")
    os.chmod(canary / "secret", 0o600)
    os.chmod(canary / "dir", 0o750)
    for path in (canary / "secret", canary / "dir" / "inner", canary / "dir", canary):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return canary


def snapshot(root: Path) -> Snapshot:
    """Mode, owner, mtime, link count and content hash of `root` and everything below it (links not followed)."""
    shot: Snapshot = {".": _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            shot[str(full.relative_to(root))] = _entry(full)
    return shot


def _entry(path: Path) -> tuple[int, int, int, int, int, str]:
    st = os.lstat(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink, digest


def member(name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
           mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = 1_700_000_000) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = type, linkname, mode, uid, gid, mtime
    info.size = len(data) if info.isreg() else 0
    return info, data


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], format: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=format) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def write_zst(path: Path, data: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


def header(name: str, size: int, type: bytes) -> bytes:
    """One raw 512-byte ustar header (for headers tarfile would refuse to write, e.g. a 512 MiB pax header)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, type
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def zeros_zst(path: Path, head: bytes, zeros: int, tail: bytes = b"") -> Path:
    """A tar.zst of `head`, then `zeros` NUL bytes, then `tail` and the end blocks, compressed as a stream."""
    cctx = zstandard.ZstdCompressor(level=1)
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as out, cctx.stream_writer(out) as w:
        w.write(head)
        left = zeros
        while left > 0:
            w.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
        w.write(tail + b"\0" * 1024)
    return path
