"""Build caches under `<data_dir>/cache`.

    packages/<family>-<release>-<arch>/   downloaded .deb/.rpm files, shared by every build
    bases/<key>.tar.zst (+ .json)         bootstrapped base systems, keyed by
                                          (family, release, arch, variant, mirror)
    results/<recipe hash>/                finished artifacts + manifest.json

Writers take a per-entry lock (fcntl) and publish with an atomic rename, so
parallel batch jobs share entries safely.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rain.generate import command
from rain.generate.recipe import Recipe

TAR_OPTS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


class CacheKind(StrEnum):
    PACKAGES = "packages"
    BASES = "bases"
    RESULTS = "results"


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
    def base_key(recipe: Recipe, mirror: str) -> str:
        o = recipe.os
        ident = json.dumps([o.family, o.release, o.arch, recipe.variant, mirror])
        return f"{o.family}-{o.release}-{o.arch}-{recipe.variant}-" + hashlib.sha256(ident.encode()).hexdigest()[:12]

    def packages_dir(self, recipe: Recipe) -> Path:
        d = self.dir(CacheKind.PACKAGES) / f"{recipe.os.family}-{recipe.os.release}-{recipe.os.arch}"
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

    def base_path(self, key: str) -> Path | None:
        p = self.dir(CacheKind.BASES) / f"{key}.tar.zst"
        if p.is_file():
            os.utime(p)
            return p
        return None

    def save_base(self, key: str, root: Path, detail: dict[str, str]) -> Path:
        final = self.dir(CacheKind.BASES) / f"{key}.tar.zst"
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            command.pipe(["tar", "-C", str(root), *TAR_OPTS, "-cf", "-", "."],
                         ["zstd", "-q", "-1", "-T0", "-o", str(tmp)], what="saving the base system")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        final.with_name(key + ".json").write_text(json.dumps({**detail, "created": time.time()}))
        return final

    @staticmethod
    def unpack_base(archive: Path, root: Path) -> None:
        """Unpack a base this cache wrote (trusted): fast path through tar."""
        command.pipe(["zstd", "-dc", "-T0", str(archive)],
                     ["tar", "-C", str(root), *TAR_OPTS, "--same-permissions", "--same-owner", "-xf", "-"],
                     what="unpacking the cached base system")

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

    # -- list / prune -----------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        out = []
        for kind in CacheKind:
            d = self.root / kind.value
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.name.startswith(".") or p.suffix == ".json":
                    continue
                key = p.name.removesuffix(".tar.zst")
                out.append(CacheEntry(kind, key, p, _size(p), p.stat().st_mtime, self._detail(kind, p)))
        return out

    def _detail(self, kind: CacheKind, p: Path) -> str:
        if kind is CacheKind.PACKAGES:
            return f"{sum(1 for _ in p.iterdir())} package files"
        if kind is CacheKind.BASES:
            meta = _json(p.with_name(p.name.removesuffix(".tar.zst") + ".json"))
            return f"mirror {meta.get('mirror', '?')}"
        meta = _json(p / "manifest.json")
        return f"{meta.get('name', '?')}: " + ", ".join(a.get("format", "?") for a in meta.get("artifacts", []))

    def prune(self, kinds: list[CacheKind] | None = None, older_than: float | None = None) -> list[CacheEntry]:
        """Remove entries (of these kinds, unused for `older_than` seconds); returns what went."""
        now = time.time()
        gone = []
        for e in self.entries():
            if kinds and e.kind not in kinds:
                continue
            if older_than is not None and now - e.last_used < older_than:
                continue
            with self.lock(e.kind, e.key):
                if e.path.is_dir():
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    e.path.unlink(missing_ok=True)
                    e.path.with_name(e.key + ".json").unlink(missing_ok=True)
            gone.append(e)
        return gone


def _size(p: Path) -> int:
    """Disk usage (sparse raw disks count what they really take)."""
    if p.is_file():
        return p.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def _json(p: Path) -> dict:  # type: ignore[type-arg]
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
