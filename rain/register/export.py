"""`fg-image register ID --target T --output PATH`: the packed image leaves Rain as a file (or a directory).

For a site Rain cannot reach, or to hand to an operator (the original Rain's
`--getimg`). PATH appears whole or not at all: everything is written under a
hidden temporary name beside it and renamed into place, so a failure (or a
Ctrl-C) halfway leaves nothing at PATH, and a reader never sees half an image.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from rain.errors import InvalidInput
from rain.host import command
from rain.register.models import Packed


def check_destination(path: Path, force: bool, names: frozenset[str] | None = None) -> None:
    """Refuse PATH before any work is spent: it exists (without --force), or its directory does not.

    --force replaces a file, or a directory holding only files an export writes (`names`, once known;
    before the pack, any plain files): `--output ~ --force` must not take a home directory with it."""
    if path.is_symlink() or path.exists():
        if not force:
            raise InvalidInput(f"--output {path} already exists",
                               hint="choose another path, or add --force to replace it")
        if path.is_dir() and not path.is_symlink() and not _replaceable(path, names):
            raise InvalidInput(f"--output {path} is a directory holding more than an earlier export",
                               hint="--force replaces only a file or an earlier export; choose another path")
    if not path.parent.is_dir():
        raise InvalidInput(f"cannot write --output {path}: there is no directory {path.parent}",
                           hint="create it first, or choose another path")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot write --output {path}: {path.parent} is not writable by you",
                           hint="choose a directory you may write")


def _replaceable(directory: Path, names: frozenset[str] | None) -> bool:
    with os.scandir(directory) as entries:
        return all(e.is_file(follow_symlinks=False) and (names is None or e.name in names) for e in entries)


def is_directory(packed: Packed) -> bool:
    """A target whose image is one file (the clouds' disks) gets a file; one made of several (hpc's
    kernel, initrd and squashfs) gets a directory holding them under their usual names."""
    return len(packed.files) > 1


def write_output(packed: Packed, path: Path, force: bool) -> list[str]:
    """Move the packed files to PATH atomically; returns the names written (PATH's own, or its entries)."""
    check_destination(path, force, frozenset(packed.files))  # again: the pack took minutes, PATH may have changed
    tmp = path.parent / f".{path.name}.rain-{uuid.uuid4().hex[:8]}"
    try:
        if is_directory(packed):
            tmp.mkdir(mode=0o755)
            for name, src in packed.files.items():
                _move(src, tmp / name)
            names = sorted(packed.files)
        else:
            _move(packed.primary_path, tmp)
            names = [path.name]
        _place(tmp, path, force)
    except BaseException:
        remove(tmp)
        raise
    return names


def _move(src: Path, dest: Path) -> None:
    """A rename where it can (the work directory is on the same file system), else a sparse copy:
    a raw disk is mostly holes, and a plain copy would fill them."""
    try:
        os.rename(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        command.run(["cp", "--reflink=auto", "--sparse=always", str(src), str(dest)], what="writing --output")
    os.chmod(dest, 0o644)


def _place(tmp: Path, path: Path, force: bool) -> None:
    """Rename tmp to path. Without --force a file is linked into place, which fails if one appeared;
    with it, what is there is moved aside first and removed only once the new one is in place."""
    if not force and tmp.is_file():
        os.link(tmp, path)
        tmp.unlink()
        return
    old = None
    if force and (path.is_symlink() or path.exists()):
        old = path.parent / f".{path.name}.rain-old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    if old is not None:
        remove(old)


def remove(path: Path) -> None:
    """Remove a file, link or directory tree at path; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
