"""The client's cache of downloaded chunks, under `<data_dir>/cache/chunks/<sha[:2]>/<sha256>`.

Bounded by the `chunk_cache` setting: after each download the least recently
used chunks go until the cache fits. A chunk is checked against its name when
read, so a damaged cache file is dropped, never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class ChunkCache:
    def __init__(self, root: Path, limit: int | None) -> None:
        """limit: bytes; 0 keeps nothing, None has no bound."""
        self.root, self.limit = root, limit

    def _path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def get(self, sha: str) -> bytes | None:
        path = self._path(sha)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: kept longest
        return data

    def put(self, sha: str, data: bytes | memoryview) -> None:
        if self.limit is not None and len(data) > self.limit:
            return
        path = self._path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def files(self) -> list[os.DirEntry[str]]:
        if not self.root.is_dir():
            return []
        return [e for d in os.scandir(self.root) if d.is_dir()
                for e in os.scandir(d.path) if e.is_file() and not e.name.startswith(".")]

    def trim(self) -> int:
        """Remove the least recently used chunks until the cache fits its limit; returns bytes removed."""
        if self.limit is None:
            return 0
        entries = sorted(self.files(), key=lambda e: e.stat().st_mtime)
        total = sum(e.stat().st_size for e in entries)
        removed = 0
        for entry in entries:
            if total - removed <= self.limit:
                break
            size = entry.stat().st_size
            Path(entry.path).unlink(missing_ok=True)
            removed += size
        return removed
