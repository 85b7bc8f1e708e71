"""Create archive members inside a root without ever following a link: the registrar runs as root.

tarfile's own extraction follows links in ways a hostile archive can steer (a
hard link named after a host path, a directory member over a symlink to a host
directory, then chmod/chown/utime through it). Here every path is reached from
an open descriptor of the root one component at a time with O_NOFOLLOW, so
a symlink on the way is seen, never crossed; every entry is created new
(O_CREAT|O_EXCL, mkdir, symlink, link) and its owner, mode and times are set
on the entry itself (fchown/fchmod on the fd, lchown for symlinks), then the
extended attributes it keeps (see xattrs; after the owner: chown clears
security.capability).
Symlinks are stored as they are, absolute ones included: they are only
dangerous to whoever writes through them, and nothing here does.

A *layer* (`layer=True`: an overlayfs upper directory a builder VM sent back, to
lay over the base system the root already shows) may also take away: a whiteout
(a 0:0 character device) removes what is at its path, a directory marked opaque
(trusted.overlay.opaque=y) first loses what it held, and an entry replaces a
directory or a symlink of another type. Removals walk the same way (never
through a link; shutil.rmtree's descriptor-based walk below that); the attribute
itself is never set, so nothing here steers an overlay mount.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, NamedTuple

from rain.image import limits
from rain.image.findings import RawFinding
from rain.image.xattrs import Keeper, Pairs

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 16
CACHED_DIRS = 64
MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "leave unchanged" to chown
OPAQUE = "SCHILY.xattr.trusted.overlay.opaque"
"""The pax record GNU tar --xattrs writes for overlayfs's opaque-directory mark."""


def is_whiteout(m: tarfile.TarInfo) -> bool:
    """overlayfs's mark for "deleted in this layer": a character device 0:0 (nothing can open it)."""
    return m.ischr() and m.devmajor == 0 and m.devminor == 0


class Attrs(NamedTuple):
    """What a directory gets at the end; kept small, there can be a million of them."""

    mode: int
    uid: int
    gid: int
    mtime: float
    xattrs: Pairs = ()

    @classmethod
    def of(cls, m: tarfile.TarInfo, kept: Pairs = ()) -> Attrs:
        return cls(m.mode, m.uid, m.gid, m.mtime, kept)


class ThroughLink(Exception):
    """A path component is a symlink; `where` is the image path of the link."""

    def __init__(self, where: str) -> None:
        self.where = where


class NotADirectory(Exception):
    """A path component exists and is neither a directory nor a symlink."""

    def __init__(self, where: str) -> None:
        self.where = where


class Tree:
    """Directory descriptors inside the root, opened without following links and cached (LRU).

    A cached descriptor stays right: the unpacker never removes or replaces a directory, except when it
    lays a layer, which forgets the descriptors below what it removes first.
    """

    def __init__(self, root: Path, on_implicit_dir: Callable[[], None]) -> None:
        self.root_fd = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._on_implicit_dir = on_implicit_dir

    def close(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()
        os.close(self.root_fd)

    def forget(self, where: str) -> None:
        """Close the cached descriptors of `where` and below (about to be removed)."""
        for key in [k for k in self._cache if k == where or k.startswith(where + "/")]:
            os.close(self._cache.pop(key))

    def dir(self, parts: list[str], create: bool = True) -> int:
        """The descriptor of the directory `parts` (relative to the root); raises ThroughLink, NotADirectory,
        or FileNotFoundError when `create` is false. Owned by the cache: do not close it."""
        start = len(parts)
        while start and "/".join(parts[:start]) not in self._cache:
            start -= 1
        fd = self.root_fd
        if start:
            key = "/".join(parts[:start])
            fd = self._cache[key]
            self._cache.move_to_end(key)
        for i in range(start, len(parts)):
            fd = self._open(fd, parts[i], "/".join(parts[:i + 1]), create)
        return fd

    def _open(self, parent: int, name: str, where: str, create: bool) -> int:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            self._on_implicit_dir()
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise ThroughLink("/" + where) from None
            raise NotADirectory("/" + where) from None
        self._cache[where] = fd
        if len(self._cache) > CACHED_DIRS:
            os.close(self._cache.popitem(last=False)[1])
        return fd


class Extractor:
    """Places members (already checked by name) into the tree; returns a finding for what it refuses."""

    def __init__(self, tree: Tree, tf: tarfile.TarFile, budget: limits.Budget, layer: bool = False) -> None:
        self.tree, self.tf, self.layer = tree, tf, layer
        self.as_root = os.geteuid() == 0
        self.dirs: dict[str, Attrs] = {}
        self.xattrs = Keeper(budget)

    def place(self, m: tarfile.TarInfo, norm: str) -> RawFinding | None:
        parts = [] if norm == "." else norm.split("/")
        if not parts:
            self.dirs[""] = Attrs.of(m, self.xattrs.plan(m, norm))
            return None
        try:
            parent = self.tree.dir(parts[:-1])
        except ThroughLink as e:
            return RawFinding("link-outside", (f"/{norm} (written through the link {e.where})",))
        name = parts[-1]
        existing = _lstat(name, parent)
        if self.layer and is_whiteout(m):
            if existing is not None:
                self._remove(parent, name, norm)
            return None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            if m.isdir():
                if self.layer and m.pax_headers.get(OPAQUE) == "y":
                    self._empty(parent, name, norm)
                self.dirs[norm] = Attrs.of(m, self.xattrs.plan(m, norm))
                return None
            if not self.layer:
                return RawFinding("archive-escape", (f"/{norm} (replaces a directory)",))
            self._remove(parent, name, norm)
            existing = None
        if m.isdir() and existing is not None and stat.S_ISLNK(existing.st_mode):
            if not self.layer:
                return RawFinding("link-outside", (f"/{norm} (a directory over the link -> "
                                                   f"{os.readlink(name, dir_fd=parent)})",))
            os.unlink(name, dir_fd=parent)  # the link itself, never what it names
            existing = None
        if m.islnk():
            return self._hard_link(m, norm, parts, existing is not None)
        if existing is not None:
            os.unlink(name, dir_fd=parent)  # replaced, never written through
        if m.isdir():
            os.mkdir(name, 0o700, dir_fd=parent)
            self.dirs[norm] = Attrs.of(m, self.xattrs.plan(m, norm))
        elif m.issym():
            os.symlink(m.linkname, name, dir_fd=parent)
            self.xattrs.refuse(norm, self.xattrs.plan(m, norm), "a symlink takes no such attribute")
            a = Attrs.of(m)
            self._owner(a, lambda uid, gid: os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False))
            _times(a, lambda t: os.utime(name, t, dir_fd=parent, follow_symlinks=False))
        else:
            self._file(m, norm, name, parent)
        return None

    def _remove(self, parent: int, name: str, norm: str) -> None:
        """A layer takes away the entry `name` of `parent` (a directory with all it holds)."""
        st = _lstat(name, parent)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            self.tree.forget(norm)
            shutil.rmtree(name, dir_fd=parent)  # descriptor-based: never follows a link inside
        else:
            os.unlink(name, dir_fd=parent)

    def _empty(self, parent: int, name: str, norm: str) -> None:
        """An opaque directory of a layer: what the layers below put in it is gone."""
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        try:
            for child in os.listdir(fd):
                self._remove(fd, child, f"{norm}/{child}")
        finally:
            os.close(fd)

    def _file(self, m: tarfile.TarInfo, norm: str, name: str, parent: int) -> None:
        kept = self.xattrs.plan(m, norm)
        fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            source = self.tf.extractfile(m)
            if source is not None:
                _copy(source, fd)
            self._attrs(Attrs.of(m, kept), fd, norm)
        finally:
            os.close(fd)

    def _hard_link(self, m: tarfile.TarInfo, norm: str, parts: list[str], exists: bool) -> RawFinding | None:
        """Join a regular file that is already in the tree, reached without links; nothing else."""
        target = os.path.normpath(m.linkname).split("/")
        refused = RawFinding("link-outside", (f"/{norm} => {m.linkname} (not a regular file of the image)",))
        try:
            tparent = os.dup(self.tree.dir(target[:-1], create=False))
        except (ThroughLink, NotADirectory, FileNotFoundError):
            return refused
        try:
            st = _lstat(target[-1], tparent)
            if st is None or not stat.S_ISREG(st.st_mode):
                return refused
            if target == parts:
                return None
            parent = self.tree.dir(parts[:-1])
            if exists:
                os.unlink(parts[-1], dir_fd=parent)
            os.link(target[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(tparent)
        return None  # the header's owner and mode belong to the shared inode's first name

    def finish(self) -> list[RawFinding]:
        """Directory owners, modes and times last (deepest first): writing children changes a directory's mtime,
        and a read-only directory would refuse them when not unpacking as root. Returns what was dropped of
        the extended attributes."""
        for norm in sorted(self.dirs, reverse=True):
            try:
                fd = self.tree.dir(norm.split("/") if norm else [], create=False)
            except (ThroughLink, NotADirectory, FileNotFoundError):
                continue  # a layer removed it (or what held it); never reach past a link regardless
            self._attrs(self.dirs[norm], fd, norm or ".")
        return self.xattrs.findings()

    def _attrs(self, a: Attrs, fd: int, norm: str) -> None:
        mode = a.mode & 0o7777
        owned = self._owner(a, lambda uid, gid: os.fchown(fd, uid, gid))
        if not owned:
            mode &= ~0o6000  # a setuid bit must never stay on a file we could not give its owner
        os.fchmod(fd, mode)
        _times(a, lambda t: os.utime(fd, t))
        self.xattrs.apply(fd, norm, a.xattrs, owned)

    def _owner(self, a: Attrs, chown: Callable[[int, int], None]) -> bool:
        """Give the entry the archive's numeric owner (root only, like tar); False if that could not be done."""
        if not self.as_root:
            return True
        if not (0 <= a.uid <= MAX_ID and 0 <= a.gid <= MAX_ID):
            return False
        try:
            chown(a.uid, a.gid)
        except OSError:
            return False
        return True


def _lstat(name: str, parent: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _times(a: Attrs, utime: Callable[[tuple[float, float]], None]) -> None:
    try:
        utime((a.mtime, a.mtime))
    except (OSError, OverflowError, ValueError):
        pass  # an impossible time is not worth refusing the image for; the entry keeps "now"


def _copy(source: IO[bytes], fd: int) -> None:
    while chunk := source.read(CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
