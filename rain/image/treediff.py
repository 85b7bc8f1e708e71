"""Compare two unpacked image roots, file by file, as diffoscope compares two archives' listings.

    differences = compare(stored_root, rebuilt_root)   # [] when the trees are the same

Each entry is described by what a reproducible build must give again: its kind,
owner, mode, size, modification time, link target or device number, the sha256
of a regular file's bytes, and its extended attributes (names and the sha256 of
each value). Links are never followed, so a tree from an untrusted image is read
only inside its root. The differences come in path order, the first `limit` of them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rain.image.rootfs import kind_of, walk_tree

LIMIT = 20


@dataclass(frozen=True)
class Difference:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass(frozen=True)
class Entry:
    kind: str
    owner: str
    mode: str
    size: int
    mtime: int
    target: str = ""
    """A link's target or a device's number."""
    sha256: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()


def describe(root: Path) -> dict[str, Entry]:
    """Every entry under root by its path inside the image ("/etc/hostname")."""
    entries = {}
    for inner, st in walk_tree(root):
        full = str(root) + inner
        kind = kind_of(st.st_mode)
        target = ""
        if kind == "symlink":
            target = os.readlink(full)
        elif kind.endswith("device"):
            target = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        entries[inner] = Entry(kind, f"{st.st_uid}:{st.st_gid}", f"{stat.S_IMODE(st.st_mode):04o}",
                               st.st_size if kind == "file" else 0, int(st.st_mtime), target,
                               _sha256(full) if kind == "file" else "", _xattrs(full))
    return entries


def compare(stored: Path, rebuilt: Path, limit: int = LIMIT) -> list[Difference]:
    """The first `limit` differences between two roots, in path order; [] when they are the same."""
    a, b = describe(stored), describe(rebuilt)
    found = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            what = "only in the stored image"
        elif path not in a:
            what = "only in the rebuild"
        elif a[path] == b[path]:
            continue
        else:
            what = _what_differs(a[path], b[path])
        found.append(Difference(path, what))
        if len(found) >= limit:
            break
    return found


def _what_differs(a: Entry, b: Entry) -> str:
    if a.kind != b.kind:
        return f"a {a.kind} in the stored image, a {b.kind} in the rebuild"
    parts = []
    if a.sha256 != b.sha256:
        parts.append(f"content (sha256 {a.sha256[:12]} → {b.sha256[:12]})" if a.size == b.size
                     else f"content ({a.size} → {b.size} bytes)")
    for field, word in (("owner", "owner"), ("mode", "mode"), ("target", "target")):
        if getattr(a, field) != getattr(b, field):
            parts.append(f"{word} {getattr(a, field)} → {getattr(b, field)}")
    if a.xattrs != b.xattrs:
        names = sorted({n for n, _ in a.xattrs} ^ {n for n, _ in b.xattrs}) or \
            sorted(n for (n, v) in a.xattrs if (n, v) not in b.xattrs)
        parts.append(f"extended attributes ({', '.join(names)})")
    if a.mtime != b.mtime:
        parts.append(f"modification time {a.mtime} → {b.mtime}")
    return ", ".join(parts)


def _sha256(full: str) -> str:
    h = hashlib.sha256()
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _xattrs(full: str) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError:
        return ()
    pairs = []
    for name in sorted(names):
        try:
            value = os.getxattr(full, name, follow_symlinks=False)
        except OSError:
            continue
        pairs.append((name, hashlib.sha256(value).hexdigest()))
    return tuple(pairs)
