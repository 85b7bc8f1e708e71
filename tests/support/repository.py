"""Putting images into a repository and watching it: helpers the repository and register tests share.

`repo` is anything with Rain's repository `put` (a Store, a RemoteRepository).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rain.errors import RainError
from rain.repository.models import Image, ImageMeta, OsInfo


def payload(size: int, seed: bytes = b"") -> bytes:
    """`size` random bytes (seeded prefix to make contents differ on demand)."""
    return (seed + os.urandom(size))[:size]


def variant(base: bytes, seed: int, edits: int = 1) -> bytes:
    """`base` with a few small insertions at random places: what one more package does to an image."""
    rng = random.Random(seed)
    data = base
    for _ in range(edits):
        at = rng.randrange(len(data))
        data = data[:at] + rng.randbytes(rng.randrange(10, 4000)) + data[at:]
    return data


def client_for(store: Any, url: str, name: str = "admin") -> Any:
    """A Client of the service at `url`, acting as `name` with a new token the store issues."""
    from rain.repository.client import Client

    return Client(url, store.issue_token(name), timeout=60)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(repo: Any, data: bytes, name: str = "img", **meta: Any) -> Image:
    """`data` stored as image `name` with ImageMeta fields `meta` (`os` as a dict), its sha256 checked."""
    os_info = OsInfo(**meta.pop("os", {}))
    return repo.put(io.BytesIO(data), ImageMeta(name=name, os=os_info, **meta), len(data), sha(data))


def upload(repo: Any, tarball: Path, name: str = "deb") -> Image:
    """A Debian 12 x86_64 tar.zst image file stored as image `name` (what register reads)."""
    os_info = {"family": "debian", "release": "12", "arch": "x86_64"}
    return put(repo, tarball.read_bytes(), name, os=os_info, format="tar.zst")


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until check() holds: the service undoes an abandoned upload when it sees the disconnect."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def refused(kind: type[RainError], call: Callable[[], Any]) -> str:
    """The one-line message of the `kind` error that `call` must raise."""
    with pytest.raises(RainError) as e:
        call()
    assert type(e.value) is kind, f"{type(e.value).__name__}: {e.value}"
    assert e.value.message and "\n" not in e.value.message
    return e.value.message
