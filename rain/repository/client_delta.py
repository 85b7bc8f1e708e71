"""Delta upload over HTTP: cut the file first, ask the service which chunks it lacks, send only those.

The file is read twice (once to cut and hash it, once for the missing chunks), so
this needs a file that can seek; a pipe is streamed whole instead (client.py).
Missing chunks go in batches of up to 16 MiB, several at once, each on its own
HTTP session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

import requests

from rain.errors import IntegrityError, RainError
from rain.repository.base import Progress
from rain.repository.chunk_routes import SEND_BYTES_MAX, SEND_MAX
from rain.repository.chunks import manifest
from rain.repository.delta import ASK_MAX
from rain.repository.models import Image, ImageMeta

if TYPE_CHECKING:
    from rain.repository.client import Client

PARALLEL = 3  # batches in flight: the client reads and the service stores at the same time


def seekable(src: BinaryIO) -> bool:
    try:
        return bool(src.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def _batches(todo: list[tuple[str, int, int]]) -> Iterator[list[tuple[str, int, int]]]:
    batch: list[tuple[str, int, int]] = []
    total = 0
    for item in todo:
        if batch and (len(batch) == SEND_MAX or total + item[2] > SEND_BYTES_MAX):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += item[2]
    if batch:
        yield batch


class _Reader:
    """Reads byte ranges of the source; with a real file descriptor, from several threads at once."""

    def __init__(self, src: BinaryIO, start: int) -> None:
        self.src, self.start, self.lock = src, start, threading.Lock()
        try:
            self.fd: int | None = src.fileno()
        except (AttributeError, ValueError, OSError):
            self.fd = None

    def read(self, offset: int, size: int) -> bytes:
        if self.fd is not None:
            data = os.pread(self.fd, size, self.start + offset)
        else:
            with self.lock:
                self.src.seek(self.start + offset)
                data = self.src.read(size)
        if len(data) != size:
            raise IntegrityError("the file changed while uploading (it is shorter now)", hint="upload again")
        return data


def put(client: Client, src: BinaryIO, meta: ImageMeta, size: int, sha256: str | None,
        progress: Progress | None, bases: Sequence[str]) -> Image:
    start = src.tell()
    plan = manifest(src, size)
    if sha256 and plan.sha256 != sha256.lower():
        raise IntegrityError(f"checksum mismatch: got sha256 {plan.sha256[:16]}…, expected {sha256[:16]}…",
                             hint="the file changed or was damaged; upload again")
    ticket = client._json("POST", "/images", json={"meta": meta.model_dump(mode="json"), "size": size,
                                                   "sha256": plan.sha256})
    upload = f"/uploads/{ticket['upload_id']}"
    try:
        distinct = list(dict.fromkeys(plan.chunks))
        missing: set[str] = set()
        for i in range(0, len(distinct), ASK_MAX):
            answer = client._json("POST", f"{upload}/needs", json={"chunks": distinct[i:i + ASK_MAX],
                                                                   "bases": list(bases)})
            missing.update(answer["missing"])
        todo, seen = [], set()
        for sha, offset, n in zip(plan.chunks, plan.offsets(), plan.sizes, strict=True):
            if sha in missing and sha not in seen:
                seen.add(sha)
                todo.append((sha, offset, n))
        if progress:
            progress(size - sum(n for _, _, n in todo))  # what the repository has already counts as done
        _send(client, upload, _Reader(src, start), todo, progress)
        body = {"chunks": plan.chunks, "sha256": plan.sha256}
        return Image(**client._json("POST", f"{upload}/commit", json=body, timeout=(10, max(client.timeout, 600))))
    except BaseException:
        try:
            client._call("DELETE", upload, timeout=(5, 10))
        except (RainError, requests.RequestException):
            pass  # the service collects it after its grace time
        raise


def _send(client: Client, upload: str, reader: _Reader, todo: list[tuple[str, int, int]],
          progress: Progress | None) -> None:
    local = threading.local()

    def send(batch: list[tuple[str, int, int]]) -> int:
        if not hasattr(local, "client"):
            local.client = client.clone()
        data = b"".join(reader.read(offset, n) for _, offset, n in batch)
        headers = {"Content-Type": "application/octet-stream",
                   "X-Rain-Chunks": ",".join(f"{sha}:{n}" for sha, _, n in batch)}
        local.client._call("POST", f"{upload}/chunks", data=data, headers=headers,
                           timeout=(10, max(client.timeout, 300)))
        return len(data)

    with ThreadPoolExecutor(PARALLEL) as pool:
        for sent in pool.map(send, _batches(todo)):
            if progress:
                progress(sent)

