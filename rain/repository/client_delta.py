"""Delta transfers over HTTP (the service's side is delta.py and chunk_routes.py).

Upload: cut the file first, ask the service which chunks it lacks, send only
those. The file is read twice (once to cut and hash it, once for the missing
chunks), so this needs a file that can seek; a pipe is streamed whole instead
(client.py).

Download: get the image's chunk list, take every chunk found in the local chunk
cache or in a seed file (the parent image, yesterday's download), fetch the
rest, and check the whole sha256 before the file counts as downloaded.

Chunks go in batches of up to 16 MiB, several at once, each on its own HTTP session.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
from pydantic import ValidationError

from rain.digests import sha256_of
from rain.errors import IntegrityError, RainError
from rain.repository.base import Progress
from rain.repository.chunk_cache import ChunkCache
from rain.repository.chunk_routes import SEND_BYTES_MAX, SEND_MAX
from rain.repository.chunks import MAXIMUM, manifest
from rain.repository.client import Client, bounded_body
from rain.repository.delta import ASK_MAX, READ_MAX
from rain.repository.models import Image, ImageChunks, ImageMeta

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



# -- downloads --------------------------------------------------------------------------------------

@dataclass
class Fetched:
    """Where a delta download's bytes came from."""

    size: int
    fetched: int = 0  # over the wire
    local: int = 0  # from seed files and the chunk cache


def _seed_pieces(seeds: Sequence[Path], wanted: set[str]) -> dict[str, tuple[Path, int, int]]:
    """The wanted chunks found in the seed files: where each is (file, offset, size)."""
    found: dict[str, tuple[Path, int, int]] = {}
    for seed in seeds:
        size = seed.stat().st_size
        with open(seed, "rb") as f:
            plan = manifest(f, size)
        for sha, offset, n in zip(plan.chunks, plan.offsets(), plan.sizes, strict=True):
            if sha in wanted and sha not in found:
                found[sha] = (seed, offset, n)
    return found


def _read_seed(where: tuple[Path, int, int], sha: str) -> bytes | None:
    path, offset, n = where
    try:
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), n, offset)
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha else None  # the seed may have changed


def runs(missing: list[int], sizes: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive missing chunk indexes as (first, count) requests of at most READ_MAX chunks, 16 MiB."""
    first, count, total = -1, 0, 0
    for i in missing:
        if count and (i != first + count or count == READ_MAX or total + sizes[i] > SEND_BYTES_MAX):
            yield first, count
            count, total = 0, 0
        if not count:
            first = i
        count += 1
        total += sizes[i]
    if count:
        yield first, count


def chunk_list(client: Client, image_id: str) -> ImageChunks:
    """The image's chunk list from the service, checked to add up (counts as one download there).
    Raises Conflict for an image stored before chunking."""
    try:
        info = ImageChunks(**client._json("GET", f"/images/{image_id}/chunks"))
    except ValidationError:
        info = None
    if info is None or len(info.chunks) != len(info.sizes) or sum(info.sizes) != info.size or \
            any(not 0 < n <= MAXIMUM for n in info.sizes):
        raise IntegrityError(f"the service's chunk list for image {image_id} does not add up to its size",
                             hint="download again; tell the operator if it persists")
    return info.model_copy(update={"id": image_id})


def read_run(client: Client, info: ImageChunks, first: int, count: int) -> list[bytes]:
    """Chunks first..first+count-1 of the image from the service, each checked against its sha256."""
    expected = sum(info.sizes[first:first + count])
    with client._call("GET", f"/images/{info.id}/chunks/data", params={"first": first, "count": count},
                      timeout=(10, max(client.timeout, 300)), stream=True) as response:
        data = bounded_body(response, expected, f"chunks {first}..{first + count - 1} of image {info.id}",
                            client.base)
    pieces, at = [], 0
    for i in range(first, first + count):
        piece = data[at:at + info.sizes[i]]
        at += len(piece)
        if hashlib.sha256(piece).hexdigest() != info.chunks[i]:
            raise IntegrityError(f"chunk {i} of image {info.id} failed its checksum on download",
                                 hint="download again; if it persists the stored bytes are damaged")
        pieces.append(piece)
    if at != len(data):
        raise IntegrityError(f"the service sent {len(data)} bytes for chunks {first}..{first + count - 1} "
                             f"of image {info.id}, not {at}", hint="download again")
    return pieces


def get(client: Client, image_id: str, part: Path, seeds: Sequence[Path], cache: ChunkCache | None,
        progress: Progress | None) -> Fetched:
    """Write the image into `part`, fetching only the chunks found neither in `cache` nor in `seeds`;
    the whole sha256 is checked before this returns (a failure removes `part`). Raises Conflict for an
    image stored before chunking (fetch it whole)."""
    info = chunk_list(client, image_id)
    offsets = list(itertools.accumulate([0, *info.sizes]))[:-1]
    local = _seed_pieces(seeds, set(info.chunks))
    done = Fetched(info.size)
    first_at: dict[str, int] = {}
    missing: list[int] = []
    try:
        with open(part, "w+b") as out:
            out.truncate(info.size)
            fd = out.fileno()
            for i, (sha, n) in enumerate(zip(info.chunks, info.sizes, strict=True)):
                if sha in first_at:
                    continue  # a repeat (runs of zeros in a raw disk): copied once the first is there
                first_at[sha] = i
                data = cache.get(sha) if cache else None
                if data is None and sha in local:
                    data = _read_seed(local[sha], sha)
                if data is None:
                    missing.append(i)
                    continue
                os.pwrite(fd, data, offsets[i])
                done.local += n
                if progress:
                    progress(n)
            _fetch_runs(client, info, offsets, missing, fd, cache, done, progress)
            for i, (sha, n) in enumerate(zip(info.chunks, info.sizes, strict=True)):
                if first_at[sha] != i:
                    os.pwrite(fd, os.pread(fd, n, offsets[first_at[sha]]), offsets[i])
                    done.local += n
                    if progress:
                        progress(n)
        _check(part, info)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if cache:
        cache.trim()
    return done


def _fetch_runs(client: Client, info: ImageChunks, offsets: list[int], missing: list[int], fd: int,
                cache: ChunkCache | None, done: Fetched, progress: Progress | None) -> None:
    local = threading.local()

    def fetch(run: tuple[int, int]) -> int:
        first, count = run
        if not hasattr(local, "client"):
            local.client = client.clone()
        at = 0
        for i, piece in enumerate(read_run(local.client, info, first, count), first):
            os.pwrite(fd, piece, offsets[i])
            if cache:
                cache.put(info.chunks[i], piece)
            at += len(piece)
        return at

    # only the first place of each chunk is fetched; a run is split where a repeat sits between
    with ThreadPoolExecutor(PARALLEL) as pool:
        for got in pool.map(fetch, runs(missing, info.sizes)):
            done.fetched += got
            if progress:
                progress(got)


def _check(part: Path, info: ImageChunks) -> None:
    if sha256_of(part) != info.sha256:
        raise IntegrityError(f"image {info.id} failed its checksum on download",
                             hint="download again; if it persists the stored bytes are damaged")
