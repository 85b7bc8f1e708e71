"""Delta transfers over HTTP (the service's side is delta.py and chunk_routes.py).

Upload: cut the file, ask the service which chunks it lacks, send only those,
group by group as the file is read once, so cutting and hashing overlap with
sending. The client takes this way for a file that can seek; a pipe is
streamed whole (client.py).

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
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
from pydantic import ValidationError

from rain.errors import IntegrityError, RainError
from rain.repository.base import Progress
from rain.repository.chunk_cache import ChunkCache
from rain.repository.chunk_routes import SEND_BYTES_MAX, SEND_MAX
from rain.repository.chunks import MAXIMUM, cut, manifest
from rain.repository.client import Client, exact_body
from rain.repository.delta import ASK_MAX, READ_MAX
from rain.repository.models import Image, ImageChunks, ImageMeta

PARALLEL = 3  # chunk requests of a download (or pull) in flight: the service reads while the client writes


def seekable(src: BinaryIO) -> bool:
    try:
        return bool(src.seekable())
    except (AttributeError, ValueError, OSError):
        return False


GROUP_BYTES = SEND_BYTES_MAX
"""Bytes of chunks asked about in one question while the file is still being cut (one batch's worth). The
read window, the group being cut and SENDING joined batches keep an upload under about 200 MiB resident."""
FIRST_GROUP_BYTES = 4 << 20
"""The first group is smaller, and each next one twice the last up to GROUP_BYTES: the service stores the
first batch while the client cuts the rest (a 16 MiB upload took 251 ms against 281 with one 16 MiB
group, a 128 MiB one 1.21 s against 1.44; medians of 12 and 5 turns)."""
SENDING = 2
"""Batches of an upload on the wire at once: two keep the service storing one while the next arrives
(three were no faster, and held 16 MiB more: a 1 GiB upload peaked at 207-210 MiB resident)."""


def put(client: Client, src: BinaryIO, meta: ImageMeta, size: int, sha256: str | None,
        progress: Progress | None, bases: Sequence[str]) -> Image:
    """Cut, ask and send as the file is read, once: while one group of chunks is asked about and its
    missing ones are on the wire, the next group is cut and hashed, so a first upload costs about what
    sending its bytes costs, and at most a few groups are in memory."""
    ticket = client._json("POST", "/images", json={"meta": meta.model_dump(mode="json"), "size": size})
    upload = f"/uploads/{ticket['upload_id']}"
    try:
        digest = hashlib.sha256()
        order: list[str] = []
        asked: set[str] = set()
        local = threading.local()

        def send(headers: dict[str, str], body: bytes) -> int:
            if not hasattr(local, "client"):
                local.client = client.clone()
            local.client._call("POST", f"{upload}/chunks", data=body, headers=headers,
                               timeout=(10, max(client.timeout, 300)))
            return len(body)

        with ThreadPoolExecutor(SENDING) as pool:
            sending: deque[Future[int]] = deque()

            def settle(keep: int) -> None:
                while len(sending) > keep:
                    sent = sending.popleft().result()
                    if progress:
                        progress(sent)

            for group in _groups(cut(src, size, digest.update)):
                order += [sha for sha, _, _ in group]
                fresh = {sha: (data, at) for sha, data, at in group if sha not in asked}
                asked.update(fresh)
                missing = _needs(client, upload, list(fresh), bases) if fresh else []
                if progress:  # what the repository already has counts as done
                    progress(sum(len(data) for _, data, _ in group) - sum(len(fresh[sha][0]) for sha in missing))
                batch: list[tuple[str, bytes, int]] = []
                for batch in _batches([(sha, *fresh[sha]) for sha in missing]):
                    settle(SENDING - 1)  # joined only once a place on the wire is free: memory stays bounded
                    sending.append(pool.submit(send, _headers(batch), b"".join(data for _, data, _ in batch)))
                del group, fresh, batch  # only the joined batches stay while the next group is cut
            settle(0)
        whole = digest.hexdigest()
        if sha256 and whole != sha256.lower():
            raise IntegrityError(f"checksum mismatch: got sha256 {whole[:16]}…, expected {sha256[:16]}…",
                                 hint="the file changed or was damaged; upload again")
        body = {"chunks": order, "sha256": whole}
        return Image(**client._json("POST", f"{upload}/commit", json=body, timeout=(10, max(client.timeout, 600))))
    except BaseException:
        try:
            client._call("DELETE", upload, timeout=(5, 10))
        except (RainError, requests.RequestException):
            pass  # the service collects it after its grace time
        raise


def _groups(pieces: Iterator[bytes]) -> Iterator[list[tuple[str, bytes, int]]]:
    """(sha256, bytes, offset in the file) of each piece, in groups of at most GROUP_BYTES (and ASK_MAX
    pieces), the first FIRST_GROUP_BYTES: what a group lacks then goes in one batch, not a full one and a
    one-chunk straggler."""
    group: list[tuple[str, bytes, int]] = []
    total = at = 0
    limit = FIRST_GROUP_BYTES
    for piece in pieces:
        if group and (total + len(piece) > limit or len(group) == min(ASK_MAX, SEND_MAX)):
            yield group
            group, total, limit = [], 0, min(limit * 2, GROUP_BYTES)
        group.append((hashlib.sha256(piece).hexdigest(), piece, at))
        at += len(piece)
        total += len(piece)
    if group:
        yield group


def _headers(batch: list[tuple[str, bytes, int]]) -> dict[str, str]:
    """X-Rain-Chunks, and X-Rain-Offset when the batch is one run of the file (the service hashes it then)."""
    headers = {"Content-Type": "application/octet-stream",
               "X-Rain-Chunks": ",".join(f"{sha}:{len(data)}" for sha, data, _ in batch)}
    if all(at + len(data) == batch[i + 1][2] for i, (_, data, at) in enumerate(batch[:-1])):
        headers["X-Rain-Offset"] = str(batch[0][2])
    return headers


def _needs(client: Client, upload: str, shas: list[str], bases: Sequence[str]) -> list[str]:
    """Of `shas` (distinct), those the upload must send, in their order."""
    answer = client._json("POST", f"{upload}/needs", json={"chunks": shas, "bases": list(bases)})
    missing = set(answer["missing"])
    return [sha for sha in shas if sha in missing]


def _batches(todo: list[tuple[str, bytes, int]]) -> Iterator[list[tuple[str, bytes, int]]]:
    batch: list[tuple[str, bytes, int]] = []
    total = 0
    for item in todo:
        if batch and (len(batch) == SEND_MAX or total + len(item[1]) > SEND_BYTES_MAX):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += len(item[1])
    if batch:
        yield batch


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


def read_run(client: Client, info: ImageChunks, first: int, count: int) -> list[memoryview]:
    """Chunks first..first+count-1 of the image from the service: views into one buffer the answer was
    read into (no copy of it as it grows). Not hashed here: a download checks the whole file's sha256 as
    it goes (_InOrder), a pull has its store check each chunk, and the chunk cache checks a chunk against
    its name whenever it reads one, so hashing each chunk here as well only cost the time of a second pass."""
    expected = sum(info.sizes[first:first + count])
    what = f"chunks {first}..{first + count - 1} of image {info.id}"
    with client._call("GET", f"/images/{info.id}/chunks/data", params={"first": first, "count": count},
                      timeout=(10, max(client.timeout, 300)), stream=True) as response:
        data, got = exact_body(response, expected, what, client.base)
    if got > expected:
        raise IntegrityError(f"{what} from {client.base} is over {expected} bytes",
                             hint="the service sent more than it should; tell its operator")
    if got < expected:
        raise IntegrityError(f"the service sent {got} bytes for {what}, not {expected}", hint="download again")
    pieces, at = [], 0
    for n in info.sizes[first:first + count]:
        pieces.append(data[at:at + n])
        at += n
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
            whole = _InOrder(fd, info, offsets, first_at, done, progress)
            _fetch_runs(client, info, offsets, missing, fd, cache, done, progress, whole)
            whole.upto(len(info.chunks))
        if whole.digest.hexdigest() != info.sha256:
            raise IntegrityError(f"image {info.id} failed its checksum on download",
                                 hint="download again; if it persists the stored bytes are damaged")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if cache:
        cache.trim()
    return done


class _InOrder:
    """The whole file's sha256, taken in file order while later runs are still on the wire (no second
    pass over the file at the end); repeats of a chunk are copied from its first place on the way."""

    def __init__(self, fd: int, info: ImageChunks, offsets: list[int], first_at: dict[str, int], done: Fetched,
                 progress: Progress | None) -> None:
        self.fd, self.info, self.offsets, self.first_at = fd, info, offsets, first_at
        self.done, self.progress = done, progress
        self.digest = hashlib.sha256()
        self.next = 0

    def upto(self, end: int) -> None:
        """Hash chunks up to `end` (not included): every one before it is in the file, or a repeat of one."""
        for i in range(self.next, end):
            sha, n = self.info.chunks[i], self.info.sizes[i]
            first = self.first_at[sha]
            data = os.pread(self.fd, n, self.offsets[first])
            if first != i:
                os.pwrite(self.fd, data, self.offsets[i])
                self.done.local += n
                if self.progress:
                    self.progress(n)
            self.digest.update(data)
        self.next = max(self.next, end)

    def fetched(self, first: int, pieces: list[memoryview]) -> None:
        """Hash the run of first places fetched from `first` on, from the buffer it arrived in (no read
        back of what was just written), after everything before it."""
        self.upto(first)
        for piece in pieces:
            self.digest.update(piece)
        self.next = first + len(pieces)


def _fetch_runs(client: Client, info: ImageChunks, offsets: list[int], missing: list[int], fd: int,
                cache: ChunkCache | None, done: Fetched, progress: Progress | None, whole: _InOrder) -> None:
    local = threading.local()

    def fetch(run: tuple[int, int]) -> list[memoryview]:
        first, count = run
        if not hasattr(local, "client"):
            local.client = client.clone()
        pieces = read_run(local.client, info, first, count)
        for i, piece in enumerate(pieces, first):
            os.pwrite(fd, piece, offsets[i])
            if cache:
                cache.put(info.chunks[i], piece)
        return pieces

    # only the first place of each chunk is fetched; a run is split where a repeat sits between. Runs are
    # taken in order, at most PARALLEL + 1 ahead: each is hashed from its buffer, which is then let go.
    todo = iter(runs(missing, info.sizes))
    with ThreadPoolExecutor(PARALLEL) as pool:
        ahead: deque[tuple[int, Future[list[memoryview]]]] = deque(
            (run[0], pool.submit(fetch, run)) for run in itertools.islice(todo, PARALLEL + 1))
        while ahead:
            first, future = ahead.popleft()
            pieces = future.result()
            del future  # the run's buffers go with `pieces` below, not with the next turn
            for run in itertools.islice(todo, 1):
                ahead.append((run[0], pool.submit(fetch, run)))
            got = sum(len(piece) for piece in pieces)
            done.fetched += got
            if progress:
                progress(got)
            whole.fetched(first, pieces)  # this run and everything before it is in the file
            del pieces
