"""Content-defined chunks: image bytes cut where their content says, each distinct piece stored once.

A variant of an image (one more package, a week's rebuild, another target's
adaptation) shares most of its bytes with its parent, but not at the same
offsets; cutting where the bytes themselves say (FastCDC's gear hash) puts the
cuts at the same places in both, so the shared runs become identical chunks.

A chunk is a document in `chunks` (`_id` its sha256, its GridFS file, its size,
`refs`: how many blobs and in-flight uploads hold it) and one GridFS file of one
GridFS chunk. An upload announces what it is about to hold in a `holds`
document before it takes a reference or writes a byte, so garbage collection
can tell its chunks and files from garbage, and can give back what an upload
that died held.

Reference counts are kept as things happen and reconciled by `repo gc`, but they
only say when to look: a chunk is deleted when no hold and no blob names it, and
only if no upload took it since that was checked (every take bumps the chunk's
version `v`, and the delete is conditional on the version read before the check).
An upload announces its hold before it takes, and a finished upload records its
blob before it drops its hold, so a count that a crash left wrong can delay a
deletion, never lose bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from bson import ObjectId

# fastcdc (PyPI, MIT): FastCDC compiled with Cython, 1.6 GiB/s on this 2-core host, well past what
# GridFS takes in (about 100 MiB/s), so cutting costs an upload nothing it would notice. Its pure
# Python fallback is 1000x slower; import the compiled module by name so a missing build fails loudly.
from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from rain.errors import IntegrityError
from rain.repository import frames

AVERAGE = 1 << 20  # the "around 1 MiB": few enough chunks per image, small enough to share
MINIMUM = AVERAGE // 4
MAXIMUM = AVERAGE * 4  # one GridFS chunk per piece: well below MongoDB's 16 MiB document limit
WINDOW = 4 * MAXIMUM  # bytes cut at a time; a cut is final once MAXIMUM bytes follow its start
READ = 1 << 20
READ_AHEAD = 64  # chunk records read at once when reading chunks' bytes
READ_BYTES = 4 << 20  # chunks' bytes asked for in one query, the next asked while the caller has the last
# (4 MiB: a 16 MiB download through the service took 78 ms against 123 ms with 8 MiB, 256 MiB the same)
BATCH_BYTES = 8 << 20  # pieces sent together: 8 MiB per insert keeps round trips few and memory flat


def cut(src: BinaryIO, size: int, seen: Callable[[bytes], None]) -> Iterator[bytes]:
    """The exactly `size` bytes of src as content-defined pieces; `seen` gets each read as it arrives.

    A stream of independent zstd frames (a tar.zst Rain wrote) is cut after whole frames (rain.repository.frames);
    any other bytes, and whatever follows where the frames stop, by FastCDC."""
    pending, remaining = b"", size
    framed: bool | None = None  # None: not known until the first bytes are in
    while True:
        parts = [pending]
        have = len(pending)
        while have < WINDOW and remaining > 0:
            data = src.read(min(READ, remaining))
            if not data:
                raise IntegrityError(f"the upload ended after {size - remaining} of {size} bytes",
                                     hint="the source was truncated or the connection dropped; upload again")
            seen(data)
            parts.append(data)
            have += len(data)
            remaining -= len(data)
        window = b"".join(parts)
        parts.clear()  # each buffer is let go as soon as it is copied on: an upload's memory is these windows
        if not window:
            break
        if framed is None:
            framed = frames.starts_frame(window)
        end, rest = 0, b""
        if framed:
            ends, framed = frames.runs(window, MINIMUM, MAXIMUM, final=not remaining)
            for at in ends:
                yield window[end:at]
                end = at
        if not framed:
            rest = window[end:] if end else window
            for piece in _fastcdc(rest, MINIMUM, AVERAGE, MAXIMUM):
                if remaining and piece.offset + MAXIMUM > len(rest):
                    break  # the cut may move once more bytes arrive
                yield rest[piece.offset:piece.offset + piece.length]
                end += piece.length
        pending = window[end:]
        window = rest = b""  # not held while the next window is read and joined
        if not remaining and not pending:
            break
    if src.read(1):
        raise IntegrityError(f"the source holds more than the declared {size} bytes", hint="declare the real size")


@dataclass
class Manifest:
    """A content as chunks: its sha256 and size, its chunks' sha256s and sizes in order, and (on the
    way in) how many of its bytes were new to the repository."""

    sha256: str
    size: int
    chunks: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    new_bytes: int = 0

    def offsets(self) -> list[int]:
        return [end - size for end, size in zip(itertools.accumulate(self.sizes), self.sizes, strict=True)]


def manifest(src: BinaryIO, size: int, seen: Callable[[int], None] | None = None) -> Manifest:
    """Cut src (what a client does before it asks what the repository lacks, or to use a seed file)."""
    digest = hashlib.sha256()

    def read(data: bytes) -> None:
        digest.update(data)
        if seen:
            seen(len(data))

    out = Manifest("", size)
    for piece in cut(src, size, read):
        out.chunks.append(hashlib.sha256(piece).hexdigest())
        out.sizes.append(len(piece))
    out.sha256 = digest.hexdigest()
    return out


def batches(pieces: Iterable[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    total = 0
    for piece in pieces:
        batch.append(piece)
        total += len(piece)
        if total >= BATCH_BYTES:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


class ChunkStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.chunks = db["chunks"]
        self.holds = db["holds"]
        self.files = db["fs.files"]
        self.data = db["fs.chunks"]

    # -- writing: hold first, then take a reference or write the bytes -----------------------------

    def hold(self, holder: str, pieces: dict[str, bytes]) -> int:
        """Take a reference on each piece for `holder`, writing the ones not stored; returns new bytes."""
        file_ids = {sha: ObjectId() for sha in pieces}
        hold_id = self.holds.insert_one({"holder": holder, "chunks": list(pieces), "files": list(file_ids.values()),
                                         "at": datetime.now(UTC)}).inserted_id
        todo = dict(pieces)
        written = 0
        while todo:
            stored = {d["_id"] for d in self.chunks.find({"_id": {"$in": list(todo)}}, {"_id": 1})}
            for sha in stored:
                if self._take(sha):
                    del todo[sha]
            if todo:
                won = self._write({sha: (file_ids[sha], data) for sha, data in todo.items()})
                written += sum(len(todo.pop(sha)) for sha in won)
                for sha in todo:  # another upload stored these first; if it lets go before we take them,
                    file_ids[sha] = ObjectId()  # they are written again, into files announced first
                if todo:
                    again = [file_ids[s] for s in todo]
                    self.holds.update_one({"_id": hold_id}, {"$push": {"files": {"$each": again}}})
        return written

    def take(self, holder: str, shas: list[str]) -> set[str]:
        """Take a reference on each stored chunk named, for `holder`; the ones taken (the rest are not stored)."""
        if not shas:
            return set()
        hold_id = self.holds.insert_one({"holder": holder, "chunks": shas, "files": [],
                                         "at": datetime.now(UTC)}).inserted_id
        taken = {sha for sha in shas if self._take(sha)}
        if len(taken) < len(shas):
            self.holds.update_one({"_id": hold_id}, {"$set": {"chunks": [s for s in shas if s in taken]}})
        return taken

    def keep_recorded(self, holder: str) -> None:
        """Narrow a killed holder's holds to what was stored: a chunk it named but never wrote has no record,
        and took no reference, so it must be sent again by whoever takes the holds over; and a file it began
        that no chunk record names is its unfinished write, removed here (once the holds are taken over and
        dropped at the end, nothing else would name it)."""
        for doc in self.holds.find({"holder": holder}, {"chunks": 1, "files": 1}):
            recorded = {d["_id"] for d in self.chunks.find({"_id": {"$in": doc["chunks"]}}, {"_id": 1})}
            files = doc.get("files", [])
            named = {d["file_id"] for d in self.chunks.find({"file_id": {"$in": files}}, {"file_id": 1})} \
                if files else set()
            narrowed: dict[str, Any] = {}
            if len(recorded) < len(doc["chunks"]):
                narrowed["chunks"] = [s for s in doc["chunks"] if s in recorded]
            if len(named) < len(files):
                self._delete_unrecorded(files)  # first: until the hold is narrowed it still names them
                narrowed["files"] = [f for f in files if f in named]
            if narrowed:
                self.holds.update_one({"_id": doc["_id"]}, {"$set": narrowed})

    def held(self, holder: str, among: list[str] | None = None) -> set[str]:
        """The chunks `holder` holds; with `among`, only which of those (reading only the holds that name one:
        an upload's batch must not read the holds of all the batches before it)."""
        if among is None:
            return {sha for d in self.holds.find({"holder": holder}, {"chunks": 1}) for sha in d["chunks"]}
        if not among:
            return set()
        wanted = set(among)
        return {sha for d in self.holds.find({"holder": holder, "chunks": {"$in": list(wanted)}}, {"chunks": 1})
                for sha in d["chunks"] if sha in wanted}

    def _take(self, sha: str) -> bool:
        return bool(self.chunks.update_one({"_id": sha}, {"$inc": {"refs": 1, "v": 1}}).matched_count)

    def _write(self, pieces: dict[str, tuple[ObjectId, bytes]]) -> set[str]:
        """Store the pieces, each as a one-chunk GridFS file and a `chunks` record; the shas this call stored.

        On a failure the bytes of pieces left without a record are removed before the error
        propagates (if the database refuses that too, `repo gc` finds them: the hold names them).
        """
        stamp = datetime.now(UTC)
        docs = [{"_id": sha, "file_id": fid, "size": len(data), "refs": 1, "v": 0}
                for sha, (fid, data) in pieces.items()]
        try:
            # the files document first, so bytes never exist without a document saying what they are, and
            # announced in the hold before that: until a chunk record names the file, the hold says whose it
            # is, and an upload that dies has it removed with its holds (give_back). (Files were once also
            # marked partial until recorded; clearing the mark cost each batch a round trip that the hold
            # makes needless. collect_partial_files still sweeps marks left from then.)
            self.files.insert_many([{"_id": fid, "length": len(data), "chunkSize": MAXIMUM, "uploadDate": stamp,
                                     "filename": sha, "metadata": {"chunk": True}}
                                    for sha, (fid, data) in pieces.items()])
            # bytes are stored as BSON binary as they are; Binary(data) would copy each piece once more
            self.data.insert_many([{"files_id": fid, "n": 0, "data": data} for fid, data in pieces.values()])
            self.chunks.insert_many(docs, ordered=False)
            return set(pieces)
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            lost = {docs[err["index"]]["_id"] for err in errors if err.get("code") == 11000}
            if len(lost) == len(errors) and errors:  # others stored these first: ours are not needed
                for sha in lost:
                    self.delete_file(pieces[sha][0])
                return set(pieces) - lost
            self._unwrite(pieces)
            raise
        except BaseException:
            self._unwrite(pieces)
            raise

    def collect_partial_files(self) -> int:
        """Remove the files marked partial that a failed write left without a chunk record (a full disk, a
        crash between two inserts), and clear the mark of those a record names; returns the bytes removed.
        Partial files are read first, then holds, then records: a file of an upload under way is announced
        in its hold before it is written, and recorded before the hold goes. (Writes no longer mark files:
        this sweeps the marks written before, and the hold now does what the mark did.)"""
        candidates = [d["_id"] for d in self.files.find({"metadata.partial": True}, {"_id": 1})]
        if not candidates:
            return 0
        announced = {fid for d in self.holds.find({"files": {"$in": candidates}}, {"files": 1}) for fid in d["files"]}
        unheld = [fid for fid in candidates if fid not in announced]
        recorded = {d["file_id"] for d in self.chunks.find({"file_id": {"$in": unheld}}, {"file_id": 1})}
        for start in range(0, len(recorded), 1000):  # written whole and named: no longer partial
            self.files.update_many({"_id": {"$in": sorted(recorded)[start:start + 1000]}},
                                   {"$unset": {"metadata.partial": ""}})
        return self._delete_unrecorded([fid for fid in unheld if fid not in recorded])

    def _unwrite(self, pieces: dict[str, tuple[ObjectId, bytes]]) -> None:
        self._delete_unrecorded([fid for fid, _ in pieces.values()])

    def _delete_unrecorded(self, fids: list[ObjectId]) -> int:
        """Delete the files no chunk record names (a recorded one is held, and given back with its holder);
        returns their bytes."""
        recorded = {d["file_id"] for d in self.chunks.find({"file_id": {"$in": fids}}, {"file_id": 1})}
        freed = 0
        for fid in set(fids) - recorded:
            freed += sum(len(d["data"]) for d in self.data.find({"files_id": fid}, {"data": 1}))
            self.delete_file(fid)
        return freed

    def give_back(self, holder: str, held: set[str] | None = None) -> int:
        """Release what `holder` took; for an upload that died (held not known), its holds say what it
        took and which files it began, and bytes it wrote but never recorded go too. Returns bytes freed."""
        files: list[ObjectId] = []
        if held is None:
            held = set()
            for doc in self.holds.find({"holder": holder}, {"chunks": 1, "files": 1}):
                held.update(doc["chunks"])
                files.extend(doc.get("files", []))
        freed = self.release(sorted(held), holder)
        if files:
            freed += self._delete_unrecorded(files)
        self.drop_holds(holder)  # last: if giving back fails half-way, the holds say what is left
        return freed

    def drop_holds(self, holder: str) -> None:
        self.holds.delete_many({"holder": holder})

    # -- giving back ----------------------------------------------------------------------------

    def release(self, shas: Iterable[str], holder: str | None = None) -> int:
        """Drop one reference on each; a chunk nothing else holds goes. Returns bytes freed.

        `holder`: the upload giving its chunks back, whose own holds do not count as holding them.
        """
        freed = 0
        for sha in shas:
            doc = self.chunks.find_one_and_update({"_id": sha}, {"$inc": {"refs": -1}},
                                                  return_document=ReturnDocument.AFTER)
            if doc is not None and doc["refs"] <= 0:
                freed += self.delete_if_unheld(sha, holder)
        return freed

    def delete_if_unheld(self, sha: str, holder: str | None = None) -> int:
        """Delete the chunk if no hold (but `holder`'s) and no blob names it; returns bytes freed."""
        doc = self.chunks.find_one({"_id": sha}, {"v": 1})
        if doc is None:
            return 0
        # holds are read before blobs: a finished upload records its blob before it drops its holds
        holds: dict[str, Any] = {"chunks": sha} if holder is None else {"chunks": sha, "holder": {"$ne": holder}}
        if self.holds.find_one(holds, {"_id": 1}) or self.db.blobs.find_one({"chunks": sha}, {"_id": 1}):
            return 0
        gone = self.chunks.find_one_and_delete({"_id": sha, "v": doc.get("v", 0)})
        if gone is None:
            return 0  # an upload took it since
        self.delete_file(gone["file_id"])
        return int(gone["size"])

    def delete_file(self, file_id: ObjectId) -> None:
        self.files.delete_one({"_id": file_id})
        self.data.delete_many({"files_id": file_id})

    # -- reading --------------------------------------------------------------------------------

    def stored(self, shas: list[str]) -> dict[str, dict[str, Any]] | None:
        """The records (file_id, size) of the chunks named, if every one is recorded and its GridFS file is
        there (two queries, not one per chunk); None otherwise."""
        records = {d["_id"]: d for d in self.chunks.find({"_id": {"$in": shas}}, {"file_id": 1, "size": 1})}
        fids = [d["file_id"] for d in records.values()]
        if len(records) != len(set(shas)) or self.files.count_documents({"_id": {"$in": fids}}) != len(fids):
            return None
        return records

    def read(self, shas: list[str], first_skip: int, remaining: int, name: str,
             records: dict[str, dict[str, Any]] | None = None) -> Iterator[bytes]:
        """The bytes of the chunks in order, skipping `first_skip` of the first, `remaining` in all.
        `records`: the chunks' records (`stored`), when already read.

        Each group's bytes are asked for while the group before is with the caller (hashed, written,
        sent): the database serves the next query while this process works, about two groups in memory.
        Closing the iterator (or dropping it: the service's event loop may be the one that does) never
        waits for the query under way; its answer is let go when it comes.
        """
        if remaining <= 0:
            return
        missing = IntegrityError(f"the bytes of content {name[:12]} are missing from the repository",
                                 hint="an administrator should run `fg-image repo gc` and re-upload")

        def fetch(group: list[dict[str, Any]]) -> dict[ObjectId, bytes]:
            fids = [record["file_id"] for record in group]
            return {d["files_id"]: d["data"] for d in self.data.find({"files_id": {"$in": fids}, "n": 0})}

        groups = self._groups(shas, first_skip + remaining, records or {}, missing)
        pool = ThreadPoolExecutor(1, thread_name_prefix="rain-chunk-read")
        try:
            ahead = [(group, pool.submit(fetch, group)) for group in itertools.islice(groups, 1)]
            while ahead:
                group, future = ahead.pop()
                data = future.result()
                ahead = [(nxt, pool.submit(fetch, nxt)) for nxt in itertools.islice(groups, 1)]
                for record in group:
                    piece = data.get(record["file_id"])
                    if piece is None or len(piece) != record["size"]:
                        raise missing
                    if first_skip or remaining < len(piece):
                        piece = bytes(memoryview(piece)[first_skip:first_skip + remaining])
                    first_skip = 0
                    remaining -= len(piece)
                    yield piece
                    if remaining <= 0:
                        return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _groups(self, shas: list[str], wanted: int, records: dict[str, dict[str, Any]],
                missing: IntegrityError) -> Iterator[list[dict[str, Any]]]:
        """The records of the chunks in order, in groups of what READ_BYTES holds (one chunk at least),
        until `wanted` bytes are covered; records not given are read READ_AHEAD at a time."""
        known, start, covered = dict(records), 0, 0
        while start < len(shas) and covered < wanted:
            if shas[start] not in known:
                window = shas[start:start + READ_AHEAD]
                ahead = [s for s in dict.fromkeys(window) if s not in known]
                found = {d["_id"]: d for d in self.chunks.find({"_id": {"$in": ahead}}, {"file_id": 1, "size": 1})}
                # the window's records, those already known kept: a chunk repeated (a disk's runs of zeros)
                # may have been looked up in an earlier window, and must not be lost with it
                known = {s: known.get(s) or found[s] for s in window if s in known or s in found}
                if shas[start] not in known:
                    raise missing
            group, size = [known[shas[start]]], known[shas[start]]["size"]
            while start + len(group) < len(shas) and covered + size < wanted:
                record = known.get(shas[start + len(group)])
                if record is None or size + record["size"] > READ_BYTES:
                    break
                group.append(record)
                size += record["size"]
            start += len(group)
            covered += size
            yield group

    # -- garbage collection ---------------------------------------------------------------------

    def holders(self) -> set[str]:
        return {d["holder"] for d in self.holds.find({}, {"holder": 1})}

    def reconcile(self, blob_chunks: Callable[[], Iterable[list[str]]]) -> tuple[int, int, int]:
        """Set every count to what holds and blobs say; delete what nothing holds.

        Counts are read first, then holds, then blobs, and each is changed only if it
        is still what was read: an upload that took a reference meanwhile announced it
        in a hold before, and a count changed meanwhile is left for the next gc.
        Returns (counts corrected, chunks removed, bytes freed).
        """
        counts = {d["_id"]: d["refs"] for d in self.chunks.find({}, {"refs": 1})}
        truth: dict[str, int] = {}
        for hold in self.holds.find({}, {"chunks": 1}):
            for sha in set(hold["chunks"]):
                truth[sha] = truth.get(sha, 0) + 1
        for shas in blob_chunks():
            for sha in set(shas):
                truth[sha] = truth.get(sha, 0) + 1
        corrected = removed = freed = 0
        for sha, refs in counts.items():
            want = truth.get(sha, 0)
            if want != refs:
                if not self.chunks.update_one({"_id": sha, "refs": refs}, {"$set": {"refs": want}}).modified_count:
                    continue  # changed meanwhile: the next gc looks again
                corrected += 1
                refs = want
            if refs <= 0:
                got = self.delete_if_unheld(sha)
                if got:
                    removed, freed = removed + 1, freed + got
        return corrected, removed, freed

    def live_files(self) -> set[ObjectId]:
        """The GridFS files that uploads under way are writing (or may yet write)."""
        return {fid for d in self.holds.find({}, {"files": 1}) for fid in d.get("files", [])}

    def referenced_files(self) -> set[ObjectId]:
        return {d["file_id"] for d in self.chunks.find({}, {"file_id": 1})}

    def stored_bytes(self) -> tuple[int, int]:
        """(distinct chunks, their bytes)."""
        n = total = 0
        for d in self.chunks.find({}, {"size": 1}):
            n, total = n + 1, total + int(d["size"])
        return n, total


def ensure_indexes(db: Database) -> None:
    db["holds"].create_index([("holder", 1)])
    db["holds"].create_index([("chunks", 1)])  # the check before a chunk is deleted
    db["holds"].create_index([("files", 1)])
    db["blobs"].create_index([("chunks", 1)])
    db["chunks"].create_index([("file_id", 1)])  # is a file recorded?
    db["fs.files"].create_index([("metadata.partial", 1)])
