"""Delta transfers. Uploads: the client cuts its file into chunks first, learns which ones the
repository lacks, sends only those, and commits the image as its ordered chunk list. Downloads: the
client gets the image's chunk list and fetches only the chunks it has nowhere (seed files, its cache).

Whether a chunk is stored may only be learnt within an upload of one's own, and
only about chunks of images one may read: the repository answers "known" for a
chunk of the upload's parent, of the bases the client names (each of which it
must be able to read) or of the uploader's own newest images of the same name
(for an administrator, who may read every image: any stored chunk), and
"missing" for everything else, stored or not. So a
chunk of someone else's private image costs its bytes on the wire, as if it
were new, and its existence never shows. The bytes sent are still stored once.

The image becomes available only at commit, once the chunks add up to the
declared size and their bytes give the declared sha256 (hashed as they
arrived where they came in file order, read back from the store otherwise);
any failure undoes the whole upload, as a streamed one would be.

A download reads chunks only through an image the caller may read, by their
place in that image, so it too learns nothing about other images.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, timedelta
from typing import Any

from rain.errors import Conflict, IntegrityError, InvalidInput, NotFound
from rain.repository import running
from rain.repository.accounts import now
from rain.repository.acting import Acting, to_image
from rain.repository.chunks import MAXIMUM, Manifest
from rain.repository.listing import matches
from rain.repository.models import Image, ImageChunks, Role, Status, User

READ_MAX = 64  # chunks in one read: at most 256 MiB, 64 MiB at the average size
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
ASK_MAX = 8192  # chunks named in one question: 8 GiB of image at the average size, a 600 KB body
BASES_MAX = 16
SAME_NAME = 2
BEAT_EVERY = 5  # seconds: a question beats the upload's heartbeat at most this often (a write costs 10 reads)
_WAITING_FIELDS = {"owner": 1, "name": 1, "parent": 1, "size": 1, "status": 1, "upload": 1}


class DeltaMixin(Acting):
    def _uploading(self, upload_id: str, claim: bool = False, user: User | None = None) -> dict[str, Any]:
        """The caller's own upload still waiting for its bytes (claimed for commit with `claim`)."""
        user = user or self.whoami()
        filt = self._waiting(upload_id, user)
        beat: dict[str, Any] = {"upload.heartbeat": now()}
        if claim:
            beat["upload.streaming"] = True  # one commit, and no streamed body into the same upload
        doc = self.images.find_one_and_update(filt, {"$set": beat})
        if doc is None:
            raise NotFound(f"no upload {upload_id} waiting for its bytes", hint="start the upload again")
        return dict(doc)

    def _waiting(self, upload_id: str, user: User, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """The rule an upload waiting for the caller's bytes meets, as a filter (`doc`: its record, if read)."""
        return {"_id": upload_id, **self._feeder(upload_id, user, doc), "status": str(Status.UPLOADING),
                "upload.streaming": {"$ne": True}}

    def _waiting_doc(self, upload_id: str, user: User) -> dict[str, Any]:
        """The caller's own upload still waiting for its bytes, read by _id alone and the rule checked here
        (the embedded server takes 2 ms of CPU for the query with the rule's fields beside the _id, 0.35 ms
        without); NotFound otherwise."""
        doc = self.images.find_one({"_id": upload_id}, _WAITING_FIELDS)
        if doc is None or not matches(doc, self._waiting(upload_id, user, doc)):  # the same rule as the writes'
            raise NotFound(f"no upload {upload_id} waiting for its bytes", hint="start the upload again")
        return dict(doc)

    def upload_waiting(self, upload_id: str) -> None:
        """NotFound unless `upload_id` is the caller's own upload still waiting for its bytes (a read: the
        batch that follows beats its heartbeat)."""
        self._waiting_doc(upload_id, self.whoami())

    def upload_needs(self, upload_id: str, shas: list[str], bases: Iterable[str] = ()) -> list[str]:
        """Of `shas`, the chunks this upload must send; the others are taken for it from its parent,
        `bases` (images the caller may read) and the caller's newest images of the same name."""
        shas = _checked_shas(shas, ASK_MAX)
        bases = list(dict.fromkeys(bases))
        if len(bases) > BASES_MAX:
            raise InvalidInput(f"{len(bases)} base images named; at most {BASES_MAX}",
                               hint="name the parent and the closest variants only")
        user = self.whoami()
        doc = self._waiting_doc(upload_id, user)
        beat = (doc.get("upload") or {}).get("heartbeat")
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if beat is None or beat < now() - timedelta(seconds=BEAT_EVERY):  # an upload of known chunks only asks
            doc = self._uploading(upload_id, user=user)
        contents = [self._find(base, user)["sha256"] for base in bases]  # NotFound for one the caller may not read
        if doc.get("parent"):
            try:
                contents.append(self._find(doc["parent"], user)["sha256"])
            except NotFound:
                pass  # removed since the upload began: it simply helps no more
        # and the caller's own newest images of the same name: last week's build of this recipe
        contents += [d["sha256"] for d in self.images.find(
            {"owner": user.name, "name": doc["name"], "status": str(Status.AVAILABLE)},
            {"sha256": 1}).sort("created", -1).limit(SAME_NAME)]
        known: set[str] = set()
        for blob in self.blobs.blobs.find({"_id": {"$in": sorted(set(contents))}}, {"chunks": 1}):
            known.update(blob.get("chunks", ()))
        held = self.blobs.chunks.held(upload_id, shas)
        wanted = [s for s in dict.fromkeys(shas) if s not in held]
        if user.role == Role.ADMIN:  # may read every image: any stored chunk tells them nothing new
            known.update(d["_id"] for d in self.blobs.chunks.chunks.find({"_id": {"$in": wanted}}, {"_id": 1}))
        taken = self.blobs.chunks.take(upload_id, [s for s in wanted if s in known])
        return [s for s in wanted if s not in taken]

    def upload_chunks(self, upload_id: str, pieces: list[tuple[str, bytes]], offset: int | None = None) -> int:
        """Store sent chunks for the upload, each checked against its sha256; returns the bytes new to the store.
        `offset`: where in the file they sit, one after another (the commit then hashes less: running.py)."""
        for sha, data in pieces:
            _checked_shas([sha], 1)
            if not 0 < len(data) <= MAXIMUM:
                raise InvalidInput(f"chunk {sha[:12]} is {len(data)} bytes; a chunk is 1 to {MAXIMUM} bytes",
                                   hint="cut the file with Rain's chunker")
            if hashlib.sha256(data).hexdigest() != sha:
                raise IntegrityError(f"chunk {sha[:12]} does not match its sha256",
                                     hint="the bytes were damaged in transit; send the chunk again")
        sent = sum(len(d) for _, d in pieces)
        # never more than the declared (and quota-reserved) size: the bytes sent are stored before the commit;
        # one write beats the heartbeat and counts them (the database's round trips are the batch's cost)
        filt = self._waiting(upload_id, self.whoami())
        room = {"$expr": {"$lte": [{"$add": [{"$ifNull": ["$upload.sent", 0]}, sent]}, "$size"]}}
        if not self.images.update_one({**filt, **room}, {"$set": {"upload.heartbeat": now()},
                                                         "$inc": {"upload.sent": sent}}).matched_count:
            doc = self._uploading(upload_id)  # NotFound when it is not (or no longer) waiting
            raise InvalidInput(f"upload {upload_id} was declared as {doc['size']} bytes; these chunks would take "
                               "it past that", hint="send each chunk once, and only the chunks the file has")
        held = self.blobs.chunks.held(upload_id, [sha for sha, _ in pieces])
        fresh = {sha: data for sha, data in pieces if sha not in held}
        new = self.blobs.chunks.hold(upload_id, fresh) if fresh else 0
        if offset is not None:
            running.arrived(upload_id, offset, pieces)
        return new

    def commit_upload(self, upload_id: str, chunks: list[str], sha256: str) -> Image:
        """Make the upload's image from its chunks in order; on any failure the upload is undone whole."""
        _checked_shas(chunks, len(chunks) or 1)
        _checked_shas([sha256.lower()], 1)
        doc = self._uploading(upload_id, claim=True)
        with ExitStack() as undo:
            undo.callback(self.accounts.release, doc["owner"], doc["size"])
            undo.callback(self.images.delete_one, {"_id": upload_id})
            undo.callback(self.blobs.abandon, upload_id)
            held = self.blobs.chunks.held(upload_id)
            unsent = [s for s in dict.fromkeys(chunks) if s not in held]
            if unsent:
                raise InvalidInput(f"chunk {unsent[0][:12]} (and {len(unsent) - 1} more) of the image was "
                                   "never sent", hint="send the chunks the repository said it lacks, then commit")
            manifest = self._verified(doc["size"], chunks, sha256.lower(), upload_id)
            extra = held - set(manifest.chunks)  # sent but not part of the image
            self.blobs.chunks.release(sorted(extra), upload_id)
            manifest.new_bytes = int((doc.get("upload") or {}).get("sent", 0))
            self.blobs.commit(upload_id, manifest)
            undo.pop_all()
        try:
            done = self._updated(upload_id, {"$set": {"status": self._stored_status(doc), "sha256": manifest.sha256},
                                             "$unset": {"upload": ""}})
        except NotFound:  # collected as stalled meanwhile: give its reference back
            self.blobs.release(manifest.sha256)
            raise
        self._log_stored(done, doc.get("upload") or {}, size=done["size"], sha256=manifest.sha256,
                         new_bytes=manifest.new_bytes, delta=True)
        return to_image(done)

    def abandon_upload(self, upload_id: str) -> None:
        """Give up the caller's own unfinished upload: its record, reserved quota and chunks go."""
        doc = self._uploading(upload_id, claim=True)
        running.forget(upload_id)
        if self.images.delete_one({"_id": upload_id, "status": str(Status.UPLOADING)}).deleted_count:
            self.blobs.abandon(upload_id)
            self.accounts.release(doc["owner"], doc["size"])

    def _verified(self, size: int, chunks: list[str], sha256: str, upload_id: str) -> Manifest:
        """The image's chunks must add up to the declared size and sha256: hashed as they arrived where
        they came in file order (running.py), read back from the store for the rest."""
        distinct = sorted(set(chunks))
        recorded = {d["_id"]: d["size"] for d in self.blobs.chunks.chunks.find({"_id": {"$in": distinct}}, {"size": 1})}
        sizes = [int(recorded.get(sha, 0)) for sha in chunks]
        if sum(sizes) != size:
            raise InvalidInput(f"the chunks add up to {sum(sizes)} bytes, the upload declared {size}",
                               hint="commit the whole file's chunks, in order")
        digest, hashed, done = running.take(upload_id, chunks) or (hashlib.sha256(), 0, 0)
        for data in self.blobs.chunks.read(chunks[hashed:], 0, size - done, sha256):
            digest.update(data)
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"checksum mismatch: the chunks give sha256 {digest.hexdigest()[:16]}…, "
                                 f"expected {sha256[:16]}…", hint="the file changed while uploading; upload again")
        return Manifest(sha256, size, list(chunks), sizes)

    # -- downloads ------------------------------------------------------------------------------

    def _chunked(self, doc: dict[str, Any], first: int = 0, count: int | None = None) -> dict[str, Any]:
        """The image's blob with its chunk list, or chunks first..first+count-1 of it (a large image's
        list is megabytes: a download reads it once, then its pieces)."""
        if count is None:
            fields: dict[str, Any] = {"chunks": 1, "sizes": 1}
        else:
            fields = {"chunks": {"$slice": [first, count]}, "sizes": {"$slice": [first, count]}}
        blob = self.blobs.blobs.find_one({"_id": doc["sha256"]}, fields)
        if blob is None or "chunks" not in blob:
            raise Conflict(f"image {doc['_id']} was stored before chunking and has no chunk list",
                           hint="download it whole (fg-image download does so by itself)")
        return dict(blob)

    def chunk_list(self, image_id: str) -> ImageChunks:
        """The image's chunks in order; counts as the download's one access."""
        doc = self._find(image_id, self.whoami())
        blob = self._chunked(doc)
        doc = self._updated(image_id, {"$set": {"last_access": now()}, "$inc": {"access_count": 1}})
        self._log("download", doc, delta=True)
        return ImageChunks(id=image_id, sha256=doc["sha256"], size=doc["size"], chunks=blob["chunks"],
                           sizes=blob["sizes"])

    def read_chunks(self, image_id: str, first: int, count: int) -> tuple[list[tuple[str, int]], Iterator[bytes]]:
        """Chunks first..first+count-1 of an image the caller may read: their (sha256, size) and their bytes."""
        doc = self._find(image_id, self.whoami())
        if not 1 <= count <= READ_MAX or first < 0:
            raise InvalidInput(f"chunks {first}..{first + count - 1} asked of image {image_id}: ask for 1 to "
                               f"{READ_MAX} at once, from 0 on", hint="see the image's chunk list")
        blob = self._chunked(doc, first, count)
        shas, sizes = blob["chunks"], blob["sizes"]
        if len(shas) != count or len(sizes) != count:
            raise InvalidInput(f"chunks {first}..{first + count - 1} are not in image {image_id}",
                               hint="ask only for chunks its chunk list names")
        records = self.blobs.chunks.stored(sorted(set(shas)))
        if records is None:
            raise IntegrityError(f"the bytes of image {image_id} are missing from the repository",
                                 hint="an administrator should run `fg-image repo gc` and re-upload")
        return (list(zip(shas, sizes, strict=True)),
                self.blobs.chunks.read(shas, 0, sum(sizes), doc["sha256"], records))


def _checked_shas(shas: list[str], most: int) -> list[str]:
    if len(shas) > most:
        raise InvalidInput(f"{len(shas)} chunks named; at most {most} at a time", hint="ask in smaller batches")
    for sha in shas:
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise InvalidInput(f"bad chunk id {str(sha)[:70]!r}",
                               hint="a chunk id is its sha256: 64 lowercase hex digits")
    return shas
