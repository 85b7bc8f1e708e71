"""A root filesystem tree on this host, read and written as if chrooted into it.

Paths inside an image are resolved against the image's root, symlinks
included, so an absolute link in the image (/etc/localtime -> /usr/share/...)
never reaches the host's own files, and a write never follows a link out.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from rain.errors import InvalidInput

_MAX_LINKS = 40
MAX_GLOB = 4096  # names one glob returns: an image's huge directory never floods a rule


@dataclass(frozen=True)
class Entry:
    rel: str  # "/etc/passwd" style, as seen inside the image
    mode: int
    uid: int
    size: int

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class LinkLoop(InvalidInput):
    """A path inside the image whose symlinks go round for more than _MAX_LINKS hops."""


class RootFS:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def resolve(self, inner: str) -> Path:
        """The host path of `inner`, following the image's symlinks inside the image only."""
        parts = [p for p in PurePosixPath("/", inner).parts[1:] if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if candidate.is_symlink():
                hops += 1
                if hops > _MAX_LINKS:
                    raise LinkLoop(f"too many symlinks resolving {inner} in the image",
                                   hint="the image has a symlink loop there; remove it in the recipe")
                target = os.readlink(candidate)
                tparts = [p for p in PurePosixPath(target).parts if p not in ("", ".")]
                if target.startswith("/"):
                    done = []
                    tparts = tparts[1:]
                parts = tparts + parts
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def _resolved(self, inner: str) -> Path | None:
        """resolve(), or None for a symlink loop: to a reader, a path that loops is a path with nothing there."""
        try:
            return self.resolve(inner)
        except LinkLoop:
            return None

    def exists(self, inner: str) -> bool:
        path = self._resolved(inner)
        return path is not None and path.exists()

    def is_regular(self, inner: str) -> bool:
        """`inner` is a regular file once the image's links are followed inside the image (a loop: no)."""
        path = self._resolved(inner)
        return path is not None and _is_regular(path)

    def read_text(self, inner: str, limit: int = 1 << 20) -> str | None:
        """The first `limit` bytes of a regular file, decoded; None for anything else (missing, a FIFO,
        a device, a directory), so an image can never make a reader block or read past the bound."""
        data = self.read_bytes(inner, limit)
        return None if data is None else data.decode("utf-8", "replace")

    def read_bytes(self, inner: str, limit: int) -> bytes | None:
        path = self._resolved(inner)
        fd = None if path is None else self._open_regular(path)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(limit)

    def read_file(self, inner: str, max_size: int) -> bytes:
        """The whole of a regular file the image must have; a one-line error naming what is wrong."""
        path = self.resolve(inner)
        fd = self._open_regular(path)
        if fd is None:
            kind = _kind(path)
            raise InvalidInput(f"{inner} is missing from the image" if kind == "missing"
                               else f"{inner} in the image is {kind}, not a regular file",
                               hint="the image is damaged; reinstall the package that owns it")
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_size:
                raise InvalidInput(f"{inner} in the image is {size} bytes, more than the {max_size} Rain reads",
                                   hint="the image is damaged; reinstall the package that owns it")
            return f.read(max_size + 1)[:max_size]

    @staticmethod
    def _open_regular(path: Path) -> int | None:
        """A read-only fd of `path` if it is a regular file. lstat first, so a device node is never
        opened (opening one can have effects); O_NOFOLLOW|O_NONBLOCK and fstat against a swap."""
        try:
            before = os.lstat(path)
            if not stat.S_ISREG(before.st_mode):
                return None
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            return None
        return fd

    def glob(self, inner_dir: str, pattern: str) -> list[str]:
        """Names in one directory matching a one-level shell pattern (no '**', no links followed to list
        a directory outside the image), at most MAX_GLOB of them."""
        base = self._resolved(inner_dir)
        prefix = inner_dir.rstrip("/")
        found: list[str] = []
        if base is None:
            return found
        try:
            if not stat.S_ISDIR(os.lstat(base).st_mode):
                return []
            with os.scandir(base) as it:
                for entry in it:
                    if fnmatch.fnmatchcase(entry.name, pattern):
                        found.append(f"{prefix}/{entry.name}")
                        if len(found) >= MAX_GLOB:
                            break
        except OSError:
            return sorted(found)
        return sorted(found)

    def write_text(self, inner: str, text: str, mode: int = 0o644) -> Path:
        """Write a file inside the image; parent links are resolved inside the image, the file itself
        replaces any link so nothing outside the root is ever written."""
        return self.write_bytes(inner, text.encode(), mode)

    def write_bytes(self, inner: str, data: bytes, mode: int = 0o644) -> Path:
        """As write_text, for bytes."""
        parent = self.resolve(str(PurePosixPath(inner).parent))
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / PurePosixPath(inner).name
        if path.is_symlink() or path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def symlink(self, inner: str, target: str) -> None:
        parent = self.resolve(str(PurePosixPath(inner).parent))
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / PurePosixPath(inner).name
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)

    def remove(self, inner: str) -> bool:
        parent = self.resolve(str(PurePosixPath(inner).parent))
        path = parent / PurePosixPath(inner).name
        if path.is_symlink() or path.is_file():
            path.unlink()
            return True
        return False

    @cached_property
    def entries(self) -> list[Entry]:
        """Every entry in the tree, not following links (computed once per vetting)."""
        return list(self._walk())

    def _walk(self) -> Iterator[Entry]:
        """Iterative, not os.walk: Python 3.11's os.walk recurses, and a deep image crashed vetting."""
        for rel, st in walk_tree(self.root):
            yield Entry(rel, st.st_mode, st.st_uid, st.st_size)

    def kernels(self) -> list[str]:
        return [k for k in self.glob("/boot", "vmlinuz-*") if _is_regular(self.resolve(k))]

    def module_dirs(self) -> list[str]:
        return self.glob("/lib/modules", "*")


def walk_tree(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """("/inner/path", lstat) of every entry under `root`, top-down, links not followed, any depth."""
    stack = [("", str(root))]
    while stack:
        rel_dir, full_dir = stack.pop()
        try:
            with os.scandir(full_dir) as it:
                entries = [(e.name, e.path) for e in it]
        except OSError:
            continue
        for name, full in entries:
            try:
                st = os.lstat(full)
            except OSError:
                continue
            yield f"{rel_dir}/{name}", st
            if stat.S_ISDIR(st.st_mode):
                stack.append((f"{rel_dir}/{name}", full))


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
          (stat.S_ISSOCK, "socket"))


def kind_of(mode: int) -> str:
    """What an entry of this mode is, in the words messages use: "file", "directory", "symlink", "FIFO", ..."""
    return next((word for test, word in _KINDS if test(mode)), "other")


def _kind(path: Path) -> str:
    """What a path that is not a regular file is, in the words an error message uses."""
    try:
        word = kind_of(os.lstat(path).st_mode)
    except OSError:
        return "missing"
    return "not a regular file" if word in ("file", "other") else f"a {word}"
