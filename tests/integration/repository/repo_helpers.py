"""Small helpers the repository integration tests share."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from rain.repository.models import Image, ImageMeta, OsInfo


def payload(size: int, seed: bytes = b"") -> bytes:
    """`size` random bytes (seeded prefix to make contents differ on demand)."""
    return (seed + os.urandom(size))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(repo: Any, data: bytes, name: str = "img", **meta: Any) -> Image:
    os_info = OsInfo(**meta.pop("os", {}))
    return repo.put(io.BytesIO(data), ImageMeta(name=name, os=os_info, **meta), len(data), sha(data))
