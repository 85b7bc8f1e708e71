"""A root filesystem tree on this host, read and written as if chrooted into it.

Paths inside an image are resolved against the image's root, symlinks
included, so an absolute link in the image (/etc/localtime -> /usr/share/...)
never reaches the host's own files, and a write never follows a link out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from rain.errors import InvalidInput

_MAX_LINKS = 40


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
                    raise InvalidInput(f"too many symlinks resolving {inner} in the image")
                target = os.readlink(candidate)
                tparts = [p for p in PurePosixPath(target).parts if p not in ("", ".")]
                if target.startswith("/"):
                    done = []
                    tparts = tparts[1:]
                parts = tparts + parts
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def exists(self, inner: str) -> bool:
        return self.resolve(inner).exists()

    def read_text(self, inner: str, limit: int = 1 << 20) -> str | None:
        path = self.resolve(inner)
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")

    def glob(self, inner_dir: str, pattern: str) -> list[str]:
        base = self.resolve(inner_dir)
        if not base.is_dir():
            return []
        prefix = inner_dir.rstrip("/")
        return sorted(f"{prefix}/{p.name}" for p in base.glob(pattern))

    def write_text(self, inner: str, text: str, mode: int = 0o644) -> Path:
        """Write a file inside the image; parent links are resolved inside the image, the file itself
        replaces any link so nothing outside the root is ever written."""
        parent = self.resolve(str(PurePosixPath(inner).parent))
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / PurePosixPath(inner).name
        if path.is_symlink() or path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
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
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = dirpath[len(root):] or "/"
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                rel = (rel_dir.rstrip("/") + "/" + name)
                yield Entry(rel, st.st_mode, st.st_uid, st.st_size)

    def kernels(self) -> list[str]:
        return [k for k in self.glob("/boot", "vmlinuz-*") if self.resolve(k).is_file()]

    def module_dirs(self) -> list[str]:
        return self.glob("/lib/modules", "*")
