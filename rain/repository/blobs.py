"""Image bytes in GridFS: streamed in and out, checksummed while moving, stored once per content.

A blob is one distinct content, keyed by its sha256 in the `blobs` collection
with a reference count; its bytes are one GridFS file. Uploads write into a
GridFS file whose id is recorded on the uploading image record first, so bytes
left by an interrupted upload can always be found and collected.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

import gridfs
from bson import Binary, ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from rain.errors import IntegrityError, InvalidInput

CHUNK = 1 << 20  # GridFS chunk and copy buffer: 1 MiB keeps memory flat and round trips few
BATCH = 8  # chunks per insert while writing
HEARTBEAT_EVERY = 5.0


class BlobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.bucket = gridfs.GridFSBucket(db, chunk_size_bytes=CHUNK)
        self.blobs = db["blobs"]

    def write(self, src: BinaryIO, size: int, file_id: ObjectId, name: str,
              progress: Callable[[int], None] | None = None,
              heartbeat: Callable[[], None] | None = None) -> str:
        """Copy exactly `size` bytes from src into GridFS file `file_id`; return their sha256.

        Chunks go out BATCH at a time (pymongo's GridIn would hold up to 48 MiB of
        them, plus their encoded message, before each insert). The files document
        is written last, so a file without one is a partial upload. On any failure
        the partial chunks are removed before the error propagates.
        """
        digest = hashlib.sha256()
        remaining = size
        last_beat = time.monotonic()
        chunks, batch, buffer, n = self.db["fs.chunks"], [], bytearray(), 0
        try:
            while remaining > 0:
                data = src.read(min(CHUNK - len(buffer), remaining))
                if not data:
                    raise IntegrityError(f"the upload ended after {size - remaining} of {size} bytes",
                                         hint="the source was truncated or the connection dropped; "
                                              "upload again")
                buffer += data
                digest.update(data)
                remaining -= len(data)
                if len(buffer) == CHUNK or remaining == 0:
                    batch.append({"files_id": file_id, "n": n, "data": Binary(bytes(buffer))})
                    buffer, n = bytearray(), n + 1
                if len(batch) == BATCH or (batch and remaining == 0):
                    chunks.insert_many(batch)
                    batch = []
                if progress:
                    progress(len(data))
                if heartbeat and time.monotonic() - last_beat > HEARTBEAT_EVERY:
                    heartbeat()
                    last_beat = time.monotonic()
            if src.read(1):
                raise IntegrityError(f"the source holds more than the declared {size} bytes",
                                     hint="declare the real size")
            self.db["fs.files"].insert_one({"_id": file_id, "length": size, "chunkSize": CHUNK,
                                            "uploadDate": datetime.now(UTC), "filename": name,
                                            "metadata": {"partial": True}})
        except BaseException:
            chunks.delete_many({"files_id": file_id})
            raise
        return digest.hexdigest()

    def commit(self, file_id: ObjectId, sha256: str, size: int) -> str:
        """Make the written file the blob for its content, or drop it if the content is stored already."""
        while True:
            try:
                self.blobs.insert_one({"_id": sha256, "file_id": file_id, "size": size, "refs": 1})
            except DuplicateKeyError:
                if self.blobs.update_one({"_id": sha256}, {"$inc": {"refs": 1}}).matched_count:
                    self.delete_file(file_id)
                    return sha256
                continue  # its last reference was released in between: our bytes become the blob
            self.db["fs.files"].update_one({"_id": file_id}, {"$unset": {"metadata.partial": ""}})
            return sha256

    def release(self, sha256: str) -> int:
        """Drop one reference; free the bytes with the last one. Returns bytes freed."""
        doc = self.blobs.find_one_and_update({"_id": sha256}, {"$inc": {"refs": -1}},
                                             return_document=ReturnDocument.AFTER)
        if doc is None or doc["refs"] > 0:
            return 0
        if self.blobs.delete_one({"_id": sha256, "refs": {"$lte": 0}}).deleted_count:
            self.delete_file(doc["file_id"])
            return int(doc["size"])
        return 0

    def delete_file(self, file_id: ObjectId) -> None:
        try:
            self.bucket.delete(file_id)
        except gridfs.errors.NoFile:
            self.db["fs.chunks"].delete_many({"files_id": file_id})

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """An iterator over the blob's bytes from offset, `length` of them (all by default).

        Missing bytes and a bad offset are reported here, before any byte is sent.
        """
        doc = self.blobs.find_one({"_id": sha256})
        missing = IntegrityError(f"the bytes of content {sha256[:12]} are missing from the repository",
                                 hint="an administrator should run `fg-image repo gc` and re-upload")
        if doc is None:
            raise missing
        try:
            grid_out = self.bucket.open_download_stream(doc["file_id"])
        except gridfs.errors.NoFile:
            raise missing from None
        if offset < 0 or offset > grid_out.length:
            grid_out.close()
            raise InvalidInput(f"offset {offset} is outside the image ({grid_out.length} bytes)")
        grid_out.seek(offset)
        remaining = grid_out.length - offset if length is None else min(length, grid_out.length - offset)
        return self._stream(grid_out, remaining, sha256)

    @staticmethod
    def _stream(grid_out: gridfs.GridOut, remaining: int, sha256: str) -> Iterator[bytes]:
        try:
            while remaining > 0:
                try:
                    chunk = grid_out.read(min(CHUNK, remaining))
                except gridfs.errors.CorruptGridFile:
                    chunk = b""
                if not chunk:
                    raise IntegrityError(f"content {sha256[:12]} is shorter than recorded",
                                         hint="the repository is damaged; re-upload the image")
                remaining -= len(chunk)
                yield chunk
        finally:
            grid_out.close()

    def orphans(self, live_files: Callable[[], set[ObjectId]]) -> list[ObjectId]:
        """GridFS files (or bare chunks) that no blob and no live upload refers to.

        What is stored is read first, then what is live, then what is committed: a file
        stored by then was begun before, so it is live, committed (an upload becomes
        available only after its blob exists) or truly abandoned. Read the other way
        round, an upload begun or finished meanwhile would lose its bytes.
        """
        files = {d["_id"] for d in self.db["fs.files"].find({}, {"_id": 1})}
        chunk_owners = set(self.db["fs.chunks"].distinct("files_id"))
        live = live_files()
        referenced = {d["file_id"] for d in self.blobs.find({}, {"file_id": 1})}
        return sorted((files | chunk_owners) - live - referenced)

    def file_size(self, file_id: ObjectId) -> int:
        doc = self.db["fs.files"].find_one({"_id": file_id}, {"length": 1})
        if doc:
            return int(doc["length"])
        return CHUNK * self.db["fs.chunks"].count_documents({"files_id": file_id})
