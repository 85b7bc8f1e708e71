"""Image bytes: streamed in and out, checksummed while moving, stored once per content and per chunk.

A blob is one distinct content (one whole-file sha256) in the `blobs` collection,
with a reference count (the images that have it) and the ordered list of its
content-defined chunks (chunks.py), each of which is stored once however many
blobs share it. The whole-file sha256 is computed on the way in and checked on
the way out, so a chunk that went wrong cannot pass unnoticed.

Blobs written before chunking name one GridFS file (`file_id`); they are still
read and freed as they were.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import BinaryIO

import gridfs
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from rain.errors import IntegrityError, InvalidInput
from rain.repository.chunks import ChunkStore, Manifest, batches, cut

CHUNK = 1 << 20  # buffer of the pre-chunking GridFS files still read
HEARTBEAT_EVERY = 5.0


class BlobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.bucket = gridfs.GridFSBucket(db, chunk_size_bytes=CHUNK)
        self.blobs = db["blobs"]
        self.chunks = ChunkStore(db)

    # -- in ---------------------------------------------------------------------------------------

    def write(self, src: BinaryIO, size: int, holder: str,
              progress: Callable[[int], None] | None = None,
              heartbeat: Callable[[], None] | None = None) -> Manifest:
        """Cut exactly `size` bytes from src into chunks held by `holder`, storing the new ones.

        On any failure what the holder took is given back before the error propagates.
        """
        digest = hashlib.sha256()
        last_beat = [time.monotonic()]

        def seen(data: bytes) -> None:
            digest.update(data)
            if progress:
                progress(len(data))
            if heartbeat and time.monotonic() - last_beat[0] > HEARTBEAT_EVERY:
                heartbeat()
                last_beat[0] = time.monotonic()

        out = Manifest("", size)
        held: set[str] = set()
        # One batch is stored (a thread waiting on the database) while the next is read, hashed and cut:
        # the database and this process each keep a core busy instead of taking turns.
        writer = ThreadPoolExecutor(1, thread_name_prefix="rain-chunk-write")
        storing: Future[int] | None = None
        try:
            for batch in batches(cut(src, size, seen)):
                fresh: dict[str, bytes] = {}
                for piece in batch:
                    sha = hashlib.sha256(piece).hexdigest()
                    out.chunks.append(sha)
                    out.sizes.append(len(piece))
                    if sha not in held:
                        fresh.setdefault(sha, piece)
                if fresh:
                    if storing is not None:
                        out.new_bytes += storing.result()
                    storing = writer.submit(self.chunks.hold, holder, fresh)
                    held.update(fresh)  # the next batch takes none of these again, stored or on the way
            if storing is not None:
                out.new_bytes += storing.result()
        except BaseException:
            if storing is not None:  # a hold still running would take references after the give-back
                wait([storing])
            self.abandon(holder)  # all its holds name: the batches done and the one that failed
            raise
        finally:
            writer.shutdown()
        out.sha256 = digest.hexdigest()
        return out

    def abandon(self, holder: str, held: set[str] | None = None) -> int:
        """Give back what an upload held (all its holds' chunks when `held` is not known); bytes freed."""
        return self.chunks.give_back(holder, held)

    def commit(self, holder: str, written: Manifest) -> str:
        """Make the written chunks the blob for their content, or add a reference if it is stored already."""
        while True:
            try:
                self.blobs.insert_one({"_id": written.sha256, "size": written.size, "refs": 1,
                                       "chunks": written.chunks, "sizes": written.sizes})
            except DuplicateKeyError:
                if self.blobs.update_one({"_id": written.sha256}, {"$inc": {"refs": 1}}).matched_count:
                    self.abandon(holder, set(written.chunks))  # the stored blob holds the same chunks
                    return written.sha256
                continue  # its last reference was released in between: ours becomes the blob
            self.chunks.drop_holds(holder)  # the blob holds the chunks now
            return written.sha256

    # -- giving back ------------------------------------------------------------------------------

    def release(self, sha256: str) -> int:
        """Drop one reference; with the last one the blob goes and gives back its chunks. Returns bytes freed."""
        doc = self.blobs.find_one_and_update({"_id": sha256}, {"$inc": {"refs": -1}},
                                             return_document=ReturnDocument.AFTER)
        if doc is None or doc["refs"] > 0:
            return 0
        if not self.blobs.delete_one({"_id": sha256, "refs": {"$lte": 0}}).deleted_count:
            return 0
        if "file_id" in doc:  # stored before chunking
            self.delete_file(doc["file_id"])
            return int(doc["size"])
        return self.chunks.release(sorted(set(doc["chunks"])))

    def delete_file(self, file_id: ObjectId) -> None:
        try:
            self.bucket.delete(file_id)
        except gridfs.errors.NoFile:
            self.db["fs.chunks"].delete_many({"files_id": file_id})

    # -- out --------------------------------------------------------------------------------------

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """An iterator over the blob's bytes from offset, `length` of them (all by default).

        Missing bytes and a bad offset are reported here, before any byte is sent.
        """
        doc = self.blobs.find_one({"_id": sha256})
        missing = IntegrityError(f"the bytes of content {sha256[:12]} are missing from the repository",
                                 hint="an administrator should run `fg-image repo gc` and re-upload")
        if doc is None:
            raise missing
        if "file_id" in doc:
            return self._read_file(doc, sha256, offset, length, missing)
        total = int(doc["size"])
        if offset < 0 or offset > total:
            raise InvalidInput(f"offset {offset} is outside the image ({total} bytes)")
        remaining = total - offset if length is None else min(length, total - offset)
        ends = list(itertools.accumulate(doc["sizes"]))
        first = bisect.bisect_right(ends, offset)
        skip = offset - (ends[first - 1] if first else 0)
        shas = doc["chunks"][first:]
        records = self.chunks.stored(sorted(set(shas)))
        if records is None:
            raise missing
        return self.chunks.read(shas, skip, remaining, sha256, records)

    def _read_file(self, doc: dict, sha256: str, offset: int, length: int | None,
                   missing: IntegrityError) -> Iterator[bytes]:
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

    # -- garbage collection -----------------------------------------------------------------------

    def blob_chunks(self) -> Iterator[list[str]]:
        for doc in self.blobs.find({"chunks": {"$exists": True}}, {"chunks": 1}):
            yield doc["chunks"]

    def orphans(self, live_files: Callable[[], set[ObjectId]]) -> list[ObjectId]:
        """GridFS files (or bare GridFS chunks) that no chunk, no old blob and no upload under way refers to.

        What is stored is read first, then what is live, then what is committed: a file
        stored by then was begun before, so it is live, committed (an upload announces
        its files in a hold before it writes them, and drops the hold only once its
        chunks are recorded) or truly abandoned. Read the other way round, an upload
        begun or finished meanwhile would lose its bytes.
        """
        files = {d["_id"] for d in self.db["fs.files"].find({}, {"_id": 1})}
        chunk_owners = set(self.db["fs.chunks"].distinct("files_id"))
        live = live_files() | self.chunks.live_files()
        referenced = self.chunks.referenced_files() | \
            {d["file_id"] for d in self.blobs.find({"file_id": {"$exists": True}}, {"file_id": 1})}
        return sorted((files | chunk_owners) - live - referenced)

    def file_size(self, file_id: ObjectId) -> int:
        doc = self.db["fs.files"].find_one({"_id": file_id}, {"length": 1})
        if doc:
            return int(doc["length"])
        return CHUNK * self.db["fs.chunks"].count_documents({"files_id": file_id})
