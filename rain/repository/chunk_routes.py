"""The service's delta transfer endpoints (see delta.py for the rules).

Downloads, under /api/v1/images/{image_id}:
- GET .../chunks                          the image's chunk list (counts as the download's access)
- GET .../chunks/data?first=I&count=N     chunks I..I+N-1, concatenated, named in X-Rain-Chunks

Uploads, under /api/v1/uploads/{upload_id}:

POST /images reserves the upload as for a streamed one; then
- POST .../needs    {"chunks": [sha256…], "bases": [image id…]} → {"missing": [sha256…]}
- POST .../chunks   the missing chunks' bytes, concatenated, named in the X-Rain-Chunks header
                    ("sha256:size,…"), and where they begin in the file (X-Rain-Offset) when they
                    are one run of it; several such requests may run at once
- POST .../commit   {"chunks": [sha256… in file order], "sha256": whole file} → the image
- DELETE ...        gives the unfinished upload up (record, quota, chunks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from rain.errors import InvalidInput, TooLarge
from rain.repository.chunks import MAXIMUM
from rain.repository.delta import ASK_MAX, BASES_MAX, READ_MAX, SHA_RE
from rain.repository.fields import Pattern, Sha256
from rain.repository.models import Image, ImageChunks, ImageId
from rain.repository.store import Store

ChunkId = Annotated[str, Pattern(SHA_RE, "chunk id", "a chunk's sha256: 64 lowercase hex digits")]
SEND_MAX = 64  # chunks in one request
SEND_BYTES_MAX = 16 << 20
COMMIT_MAX = 500_000  # chunks in one image: 500 GiB at the average chunk size


class ChunkQuestion(BaseModel):
    chunks: list[ChunkId] = Field(max_length=ASK_MAX)
    bases: list[ImageId] = Field(default_factory=list, max_length=BASES_MAX)


class ChunkAnswer(BaseModel):
    missing: list[str]


class ChunksStored(BaseModel):
    new_bytes: int


class UploadCommit(BaseModel):
    chunks: list[ChunkId] = Field(max_length=COMMIT_MAX)
    sha256: Sha256


_ENTRY = "[0-9a-f]{64}:[1-9][0-9]{0,6}"
_CHUNKS_BODY: dict[str, Any] = {
    "parameters": [{"name": "X-Rain-Chunks", "in": "header", "required": True,
                    "description": f"the chunks in the body, in order: sha256:size, comma-separated; at most "
                                   f"{SEND_MAX} chunks and {SEND_BYTES_MAX} bytes",
                    "schema": {"type": "string", "pattern": f"^{_ENTRY}(,{_ENTRY})*$"}},
                   {"name": "X-Rain-Offset", "in": "header", "required": False,
                    "description": "where in the file the first chunk sent begins, when the chunks sent sit one "
                                   "after another there; lets the commit hash them as they arrived instead of "
                                   "reading them back", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}],
    "requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def named_chunks(header: str) -> list[tuple[str, int]]:
    """The X-Rain-Chunks header as (sha256, size) pairs, checked before any byte of the body is read."""
    pairs: list[tuple[str, int]] = []
    for item in filter(None, header.split(",")):
        sha, _, size = item.strip().partition(":")
        if not SHA_RE.match(sha) or not size.isdigit() or not 0 < int(size) <= MAXIMUM:
            raise InvalidInput(f"bad X-Rain-Chunks entry {item.strip()[:80]!r}",
                               hint=f"give sha256:size for each chunk, size 1 to {MAXIMUM}")
        pairs.append((sha, int(size)))
    if not pairs or len(pairs) > SEND_MAX or sum(n for _, n in pairs) > SEND_BYTES_MAX:
        raise InvalidInput(f"X-Rain-Chunks names {len(pairs)} chunk(s); send 1 to {SEND_MAX} chunks, "
                           f"at most {SEND_BYTES_MAX} bytes, per request", hint="split the batch")
    return pairs


def file_offset(header: str | None) -> int | None:
    """The X-Rain-Offset header: where in the file the chunks sent begin, one after another."""
    if header is None:
        return None
    if not header.isdigit() or len(header) > 18:
        raise InvalidInput(f"bad X-Rain-Offset {header[:40]!r}",
                           hint="give the byte offset in the file of the first chunk sent, or leave it out")
    return int(header)


async def _body(request: Request, size: int) -> memoryview:
    """The body, read into one buffer of the named size (no copy as it grows)."""
    body = bytearray(size)
    view, at = memoryview(body), 0
    async for part in request.stream():
        if at + len(part) > size:
            raise TooLarge(f"the body holds more than the {size} bytes X-Rain-Chunks names",
                           hint="send exactly the named chunks")
        view[at:at + len(part)] = part
        at += len(part)
    if at != size:
        raise InvalidInput(f"the body holds {at} bytes, X-Rain-Chunks names {size}",
                           hint="send exactly the named chunks")
    return view


def upload_router(store: Callable[..., Awaitable[Store]]) -> APIRouter:
    router = APIRouter(prefix="/uploads/{upload_id}", tags=["uploads"])
    acting: Any = Depends(store)

    @router.post("/needs", response_model=ChunkAnswer)
    def needs(upload_id: ImageId, body: ChunkQuestion, s: Store = acting) -> ChunkAnswer:
        """Which of the named chunks this upload must send. Chunks of its parent and of the named bases
        (images you may read) are taken for it; every other chunk is reported missing, stored or not."""
        return ChunkAnswer(missing=s.upload_needs(upload_id, body.chunks, body.bases))

    @router.post("/chunks", response_model=ChunksStored, openapi_extra=_CHUNKS_BODY)
    async def chunks(upload_id: ImageId, request: Request, s: Store = acting) -> ChunksStored:
        """Chunks' bytes for the upload, each checked against its sha256."""
        await anyio.to_thread.run_sync(lambda: s.upload_waiting(upload_id))  # 404 before the body is read
        pairs = named_chunks(request.headers.get("x-rain-chunks", ""))
        offset = file_offset(request.headers.get("x-rain-offset"))
        data = await _body(request, sum(n for _, n in pairs))
        pieces, at = [], 0
        for sha, n in pairs:
            pieces.append((sha, bytes(data[at:at + n])))  # bytes: what BSON stores as binary without a copy
            at += n
        del data
        new = await anyio.to_thread.run_sync(lambda: s.upload_chunks(upload_id, pieces, offset))
        return ChunksStored(new_bytes=new)

    @router.post("/commit", response_model=Image)
    def commit(upload_id: ImageId, body: UploadCommit, s: Store = acting) -> Image:
        """The image, made of its chunks in order and checked against the whole file's sha256."""
        return s.commit_upload(upload_id, body.chunks, body.sha256)

    @router.delete("", status_code=204)
    def abandon(upload_id: ImageId, s: Store = acting) -> None:
        """Give up an unfinished upload: its record, reserved quota and chunks go."""
        s.abandon_upload(upload_id)

    return router


def download_router(store: Callable[..., Awaitable[Store]]) -> APIRouter:
    router = APIRouter(prefix="/images/{image_id}/chunks", tags=["images"])
    acting: Any = Depends(store)

    @router.get("", response_model=ImageChunks)
    def chunk_list(image_id: ImageId, s: Store = acting) -> ImageChunks:
        """The image's chunks in file order, to fetch only those the client has nowhere."""
        return s.chunk_list(image_id)

    @router.get("/data", response_class=Response, responses=_CHUNK_DATA)
    def chunk_data(image_id: ImageId, first: Annotated[int, Query(ge=0)],
                   count: Annotated[int, Query(ge=1, le=READ_MAX)], s: Store = acting) -> Response:
        """Chunks first..first+count-1 of the image, concatenated; X-Rain-Chunks names them (sha256:size)."""
        named, data = s.read_chunks(image_id, first, count)
        return StreamingResponse(data, media_type="application/octet-stream", headers={
            "X-Rain-Chunks": ",".join(f"{sha}:{n}" for sha, n in named),
            "Content-Length": str(sum(n for _, n in named))})

    return router


_CHUNK_DATA: dict[int | str, dict[str, Any]] = {200: {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {"X-Rain-Chunks": {"schema": {"type": "string"}, "description": "sha256:size of each chunk"}},
    "description": "The chunks' bytes, in order"}}
