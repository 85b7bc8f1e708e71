"""Build caches under `<data_dir>/cache`.

    packages/<family>-<release>-<arch>/   downloaded .deb/.rpm files, shared by every build
    bases/<key>/ (+ <key>.json)           bootstrapped base systems (directories), keyed by
                                          (family, release, arch, variant, mirror)
    bases/<key>.squashfs                  that base as a read-only file system, made the first
                                          time a builder VM on this host needs it (base_image)
    results/<recipe hash>/                finished artifacts + manifest.json
    chunks/<sha[:2]>/<sha256>             chunks of images downloaded from a service (listed and
                                          pruned as one entry; rain/repository/chunk_cache.py)

Writers take a per-entry lock (fcntl) and publish with an atomic rename, so
parallel batch jobs share entries safely; a build layers its root over a base
(overlayfs, see layers.py) and holds that base's lock shared while it runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rain.generate.layers import remove_tree
from rain.generate.recipe import RHEL_REVISION, Recipe
from rain.image.formats import make_lower

BASE_FORMAT = 2
"""Bumped when what a base contains changes, so older cached bases are not reused."""

SIDECARS = (".json", ".squashfs")
"""Files next to a base directory that belong to it: listed, sized and pruned with it."""


class CacheKind(StrEnum):
    PACKAGES = "packages"
    BASES = "bases"
    RESULTS = "results"
    CHUNKS = "chunks"


@dataclass(frozen=True)
class CacheEntry:
    kind: CacheKind
    key: str
    path: Path
    size: int
    last_used: float
    detail: str


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_data(cls, data_path: Path) -> Cache:
        return cls(data_path / "cache")

    def dir(self, kind: CacheKind) -> Path:
        d = self.root / kind.value
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- keys -------------------------------------------------------------

    @staticmethod
    def base_key(recipe: Recipe, mirror: str, lock: str | None = None) -> str:
        """The base system's key: its OS, variant and mirror, and the digest of a lock pinning its packages."""
        o = recipe.os
        ident = json.dumps([BASE_FORMAT, o.family, o.release, o.arch, recipe.variant, mirror,
                            *([lock] if lock is not None else []),
                            *([] if o.family.is_debian else [f"rhel-{RHEL_REVISION}"])])
        return f"{o.family}-{o.release}-{o.arch}-{recipe.variant}-" + hashlib.sha256(ident.encode()).hexdigest()[:12]

    def packages_dir(self, recipe: Recipe) -> Path:
        return self.packages_dir_for(recipe.os.family, recipe.os.release, recipe.os.arch)

    def packages_dir_for(self, family: str, release: str, arch: str) -> Path:
        """The shared package directory of one distribution; register's installs in a local chroot use it too."""
        d = self.dir(CacheKind.PACKAGES) / f"{family}-{release}-{arch}"
        d.mkdir(exist_ok=True)
        return d

    # -- locking ----------------------------------------------------------

    @contextmanager
    def lock(self, kind: CacheKind, key: str) -> Iterator[None]:
        path = self.dir(kind) / f".{key}.lock"
        with open(path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- bases ------------------------------------------------------------

    def base_dir(self, key: str) -> Path:
        return self.dir(CacheKind.BASES) / key

    def base_meta(self, key: str) -> dict[str, Any]:
        return _json(self.dir(CacheKind.BASES) / f"{key}.json")

    def acquire_base(self, key: str, undo: ExitStack, fresh: Callable[[Path], dict[str, Any]],
                     use_cache: bool = True) -> tuple[Path, bool]:
        """A ready base directory, held (shared lock) until `undo` closes; (path, came from cache).

        When there is none (or use_cache is False) `fresh(tmpdir)` bootstraps one
        into a temporary directory under an exclusive lock; it is published with
        a rename, so a half-built base is never used.
        """
        lock = open(self.dir(CacheKind.BASES) / f".{key}.lock", "w")
        undo.callback(lock.close)
        final = self.base_dir(key)

        def ready() -> bool:
            return final.is_dir() and (final.parent / f"{key}.json").is_file()

        if use_cache:
            fcntl.flock(lock, fcntl.LOCK_SH)
            if ready():
                # last use goes on the .json, not the tree: another build may be tarring the tree to its
                # builder VM right now, and tar fails on a directory whose times change as it reads
                os.utime(final.parent / f"{key}.json")
                return final, True
            fcntl.flock(lock, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if use_cache and ready():
            fcntl.flock(lock, fcntl.LOCK_SH)
            return final, True
        tmp = final.with_name(f".{key}.tmp-{os.getpid()}-{threading.get_ident()}")
        remove_tree(tmp)
        tmp.mkdir()
        try:
            detail = fresh(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
        meta = final.parent / f"{key}.json"
        meta.unlink(missing_ok=True)
        self.base_image_path(key).unlink(missing_ok=True)  # made from the tree this one replaces
        if final.exists():
            old = final.with_name(f".{key}.old-{os.getpid()}")
            os.rename(final, old)
            remove_tree(old)
        os.rename(tmp, final)
        meta.write_text(json.dumps({**detail, "created": time.time()}))
        fcntl.flock(lock, fcntl.LOCK_SH)
        return final, False

    def base_image_path(self, key: str) -> Path:
        return self.dir(CacheKind.BASES) / f"{key}.squashfs"

    def base_image(self, key: str) -> Path:
        """The base `key` (held by the caller, see acquire_base) as a squashfs image (formats.make_lower), made
        once: what a builder VM on this host mounts read-only under the image root instead of unpacking the tree."""
        image = self.base_image_path(key)
        with self.lock(CacheKind.BASES, f"{key}.squashfs"):
            if image.is_file():
                return image
            tmp = image.with_name(f".{image.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                make_lower(self.base_dir(key), tmp)
                os.replace(tmp, image)
            finally:
                tmp.unlink(missing_ok=True)
        return image

    # -- packages ---------------------------------------------------------

    @staticmethod
    def link_packages(src: Path, dest: Path, suffix: str) -> int:
        """Hard-link (or copy) package files from src into dest; returns how many are new there."""
        n = 0
        if not src.is_dir() or not dest.is_dir():
            return 0
        for f in src.iterdir():
            if not f.name.endswith(suffix) or f.is_symlink() or not f.is_file():
                continue
            target = dest / f.name
            if target.exists():
                continue
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
            n += 1
        return n

    # -- results ----------------------------------------------------------

    def result_dir(self, recipe_hash: str) -> Path:
        return self.dir(CacheKind.RESULTS) / recipe_hash

    def result(self, recipe_hash: str) -> Path | None:
        d = self.result_dir(recipe_hash)
        if (d / "manifest.json").is_file():
            os.utime(d)
            return d
        return None

    def drop_result(self, key: str) -> None:
        """Remove one result: a rebuild's, made only to be compared with the stored image."""
        with self.lock(CacheKind.RESULTS, key):
            d = self.result_dir(key)
            if d.is_dir():
                remove_tree(d)

    # -- list / prune -----------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        out = []
        for kind in CacheKind:
            d = self.root / kind.value
            if not d.is_dir():
                continue
            if kind is CacheKind.CHUNKS:  # thousands of small files: one entry
                files = [f for f in d.rglob("*") if f.is_file()]
                if files:
                    out.append(CacheEntry(kind, "downloaded", d, sum(f.stat().st_size for f in files),
                                          max(f.stat().st_mtime for f in files), f"{len(files)} image chunks"))
                continue
            for p in sorted(d.iterdir()):
                if p.name.startswith(".") or p.suffix in SIDECARS:
                    continue
                key = p.name
                size = _size(p) + sum(_size(side) for side in _sidecars(p) if side.is_file())
                out.append(CacheEntry(kind, key, p, size, _last_used(p), self._detail(kind, p)))
        return out

    def _detail(self, kind: CacheKind, p: Path) -> str:
        if kind is CacheKind.PACKAGES:
            return f"{sum(1 for _ in p.iterdir())} package files"
        if kind is CacheKind.BASES:
            return f"mirror {self.base_meta(p.name).get('mirror', '?')}"
        meta = _json(p / "manifest.json")
        return f"{meta.get('name', '?')}: " + ", ".join(a.get("format", "?") for a in meta.get("artifacts", []))

    def prune(self, kinds: list[CacheKind] | None = None, older_than: float | None = None) -> list[CacheEntry]:
        """Remove entries (of these kinds, unused for `older_than` seconds); returns what went.

        An entry a running build holds (a base it is layered on) is left alone.
        """
        now = time.time()
        gone = []
        for e in self.entries():
            if kinds and e.kind not in kinds:
                continue
            if older_than is not None and now - e.last_used < older_than:
                continue
            with open(self.dir(e.kind) / f".{e.key}.lock", "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                for side in _sidecars(e.path):
                    side.unlink(missing_ok=True)
                if e.path.is_dir():
                    remove_tree(e.path)
                else:
                    e.path.unlink(missing_ok=True)
            gone.append(e)
        return gone


def _sidecars(p: Path) -> list[Path]:
    """The files that belong to entry p (a base's metadata and squashfs image), whether or not they exist."""
    return [p.with_name(p.name + suffix) for suffix in SIDECARS]


def _last_used(p: Path) -> float:
    """An entry's last use: its mtime, or its .json's where that is later (a base's uses touch only that)."""
    used = p.stat().st_mtime
    try:
        return max(used, p.with_name(p.name + ".json").stat().st_mtime)
    except OSError:
        return used


def _size(p: Path) -> int:
    """Disk usage (sparse raw disks count what they really take)."""
    if p.is_file():
        return p.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def _json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
