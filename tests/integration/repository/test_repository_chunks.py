"""Variants stored once: content-defined chunks shared between images, given back exactly, reconciled by gc."""

from __future__ import annotations

import io
import os
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.repository import payload, put, refused, sha, variant

from rain.errors import Forbidden
from rain.repository.connect import open_store
from rain.repository.models import ImageMeta

pytestmark = pytest.mark.integration
MiB = 1 << 20



def stored_bytes(db) -> int:
    return sum(c["size"] for c in db.chunks.find())


def downloaded(repo, image_id: str, offset: int = 0, length: int | None = None) -> bytes:
    image, chunks = repo.open(image_id, offset, length)
    return b"".join(chunks)


def assert_consistent(db) -> None:
    """Every chunk is held by a blob (no upload is under way), counted right, and has its bytes."""
    holders: dict[str, int] = {}
    for blob in db.blobs.find():
        for digest in set(blob["chunks"]):
            holders[digest] = holders.get(digest, 0) + 1
    chunks = {c["_id"]: c for c in db.chunks.find()}
    assert set(chunks) == set(holders), "a chunk no blob holds, or a blob whose chunk is gone"
    assert {d: c["refs"] for d, c in chunks.items()} == holders
    assert db["fs.files"].count_documents({}) == len(chunks) == db["fs.chunks"].count_documents({})
    assert db.holds.count_documents({}) == 0


def test_variants_share_their_chunks_and_read_back_whole(settings):
    repo = open_store(settings, "admin")
    base = payload(12 * MiB)
    variants = [variant(base, seed, edits=2) for seed in range(4)]

    first = put(repo, base, "base")
    alone = stored_bytes(repo.db)
    ids = [put(repo, data, f"v{i}", parent=first.id).id for i, data in enumerate(variants)]

    # each variant adds about the chunks its two edits touched: at most 2 x 4 MiB (the largest chunk), not 12 MiB
    added = stored_bytes(repo.db) - alone
    assert added <= len(variants) * 2 * 4 * MiB and added < len(variants) * len(base) / 2, added
    new = [e.detail["new_bytes"] for e in repo.history(limit=10) if e.action == "upload"]
    assert sorted(new)[-1] == len(base) and all(n <= 8 * MiB for n in sorted(new)[:-1])
    for image_id, data in zip(ids, variants, strict=True):
        assert sha(downloaded(repo, image_id)) == sha(data)
    assert_consistent(repo.db)


def test_a_range_read_across_chunk_boundaries_gives_exactly_the_range(settings):
    repo = open_store(settings, "admin")
    data = payload(9 * MiB)
    image = put(repo, data, "ranges")
    rng = random.Random(7)
    for _ in range(12):
        offset = rng.randrange(len(data))
        length = rng.randrange(1, 5 * MiB)
        assert downloaded(repo, image.id, offset, length) == data[offset:offset + length]
    assert downloaded(repo, image.id, len(data)) == b""


def readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rain-chunk-read")]


@pytest.mark.parametrize("give_up", ["close", "drop"])
def test_a_download_given_up_partway_leaves_no_read_running(settings, give_up):
    """The bytes of the next chunks are read while the ones before are sent. A client that hangs up
    mid-download must not leave that read behind (in the service, one per abandoned download would pile
    up), whether the body is closed or only dropped (what the service's event loop does with it)."""
    repo = open_store(settings, "admin")
    data = payload(40 * MiB)
    image = put(repo, data, "abandoned")
    _, chunks = repo.open(image.id)
    first = next(chunks)
    assert data.startswith(first)
    assert readers(), "the next chunks are not being read ahead"
    if give_up == "close":
        chunks.close()
    else:
        del chunks
    deadline = time.monotonic() + 30  # the query under way is not waited for: its thread ends after it
    while readers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert readers() == []


def test_removing_the_base_keeps_the_variant_and_the_last_removal_frees_every_chunk(settings):
    repo = open_store(settings, "admin")
    base = payload(6 * MiB)
    derived = variant(base, 1, edits=2)
    first, second = put(repo, base, "base"), put(repo, derived, "variant")

    repo.remove(first.id)
    assert downloaded(repo, second.id) == derived
    assert_consistent(repo.db)
    assert stored_bytes(repo.db) == len(derived)  # the base's own chunks went with it

    repo.remove(second.id)
    db = repo.db
    assert (db.chunks.count_documents({}), db.blobs.count_documents({}), db["fs.files"].count_documents({}),
            db["fs.chunks"].count_documents({})) == (0, 0, 0, 0)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class FailingSource(io.BytesIO):
    """A file whose disk fails after `good` bytes."""

    def __init__(self, data: bytes, good: int) -> None:
        super().__init__(data)
        self.good = good

    def read(self, n: int | None = -1) -> bytes:
        if self.tell() >= self.good:
            raise OSError(5, "Input/output error")
        return super().read(n)


def test_a_source_failing_while_a_batch_is_being_stored_leaves_only_what_was_there(settings):
    """Batches are stored while the next is cut: a read error then must still give back every batch,
    the one being stored included, and leave the catalog, the counts and the quota as they were."""
    repo = open_store(settings, "admin")
    base = payload(8 * MiB)
    kept = put(repo, base, "kept")
    before = stored_bytes(repo.db)
    data = base + payload(40 * MiB)  # shares its first chunks with `kept`; several 8 MiB batches follow
    with pytest.raises(OSError, match="Input/output error"):
        repo.put(FailingSource(data, 36 * MiB), ImageMeta(name="broken"), len(data), sha(data))
    assert [i.name for i in repo.list()] == ["kept"]
    assert stored_bytes(repo.db) == before and repo.whoami().used_bytes == len(base)
    assert_consistent(repo.db)
    assert downloaded(repo, kept.id) == base


def test_gc_gives_back_what_a_dead_upload_held_and_corrects_wrong_counts(settings):
    repo = open_store(settings, "admin")
    base = payload(8 * MiB)
    kept = put(repo, base, "kept")
    # an upload that died part-way: its record, its holds, a chunk it wrote and one it shared with `kept`
    upload_id = repo.begin_upload(ImageMeta(name="died"), 9 * MiB)
    repo.images.update_one({"_id": upload_id}, {"$set": {"upload.pid": dead_pid()}})
    repo.blobs.write(io.BytesIO(base[:4 * MiB] + os.urandom(5 * MiB)), 9 * MiB, upload_id)
    assert repo.db.holds.count_documents({"holder": upload_id}) > 0
    some = repo.db.chunks.find_one({"refs": 1})
    repo.db.chunks.update_one({"_id": some["_id"]}, {"$set": {"refs": 7}})  # a count a crash left wrong

    report = repo.gc()

    assert report.uploads_removed == 1 and report.bytes_freed > 0
    assert report.counts_corrected >= 1
    assert_consistent(repo.db)
    assert downloaded(repo, kept.id) == base
    assert repo.whoami().used_bytes == len(base)


def test_a_removal_racing_uploads_of_variants_loses_no_chunk(settings):
    """One user removes and re-uploads the base while others upload variants sharing its chunks, gc running."""
    admin = open_store(settings, "admin")
    base = payload(6 * MiB)
    stop = threading.Event()

    def churn_base() -> int:
        repo = open_store(settings, "admin")
        rounds = 0
        while not stop.is_set():
            repo.remove(put(repo, base, "base").id)
            rounds += 1
        return rounds

    def upload_variants(worker: int) -> list[tuple[str, bytes]]:
        repo = open_store(settings, "admin")
        return [(put(repo, data, f"w{worker}-{i}").id, data)
                for i, data in enumerate(variant(base, worker * 100 + i, edits=1) for i in range(6))]

    def collect() -> None:
        repo = open_store(settings, "admin")
        while not stop.is_set():
            repo.gc()

    with ThreadPoolExecutor(4) as pool:
        churner, collector = pool.submit(churn_base), pool.submit(collect)
        try:
            with ThreadPoolExecutor(2) as uploaders:
                uploaded = [item for batch in uploaders.map(upload_variants, range(2)) for item in batch]
        finally:
            stop.set()
        assert churner.result() > 0
        collector.result()

    admin.gc()
    for image_id, data in uploaded:
        assert sha(downloaded(admin, image_id)) == sha(data)
    assert_consistent(admin.db)


def test_the_storage_report_shows_logical_stored_and_ratio_to_administrators_only(backend):
    base = random.Random(5).randbytes(16 * MiB)  # fixed: the bound below depends on where the cuts fall
    for i in range(3):
        put(backend.admin, variant(base, i, edits=1), f"v{i}")
    put(backend.admin, base, "again")  # the same content twice: charged twice, stored once
    put(backend.admin, base, "and-again")

    report = backend.admin.storage()

    assert report.images == 5 and report.logical_bytes == sum(i.size for i in backend.admin.list())
    assert report.stored_bytes == stored_bytes(backend.db) < 1.5 * len(base)
    assert report.dedup_ratio == round(report.logical_bytes / report.stored_bytes, 3) and report.dedup_ratio > 2.5
    (alice,) = backend.users("alice")
    assert "administrator" in refused(Forbidden, alice.storage)


def test_bytes_a_failed_write_left_without_a_record_are_collected_unless_an_upload_announced_them(settings):
    from bson import Binary, ObjectId

    repo = open_store(settings, "admin")
    db = repo.db
    upload_id = repo.begin_upload(ImageMeta(name="writing"), 5)  # alive: this process
    left, announced = ObjectId(), ObjectId()
    for fid in (left, announced):  # what a write cut off between its inserts leaves: bytes, no chunk record
        db["fs.files"].insert_one({"_id": fid, "length": 5, "chunkSize": 5, "metadata": {"chunk": True,
                                                                                        "partial": True}})
        db["fs.chunks"].insert_one({"files_id": fid, "n": 0, "data": Binary(b"bytes")})
    db.holds.insert_one({"holder": upload_id, "chunks": [], "files": [announced]})

    report = repo.collect_stale_uploads()

    assert report.bytes_freed == 5
    assert db["fs.files"].find_one({"_id": left}) is None and db["fs.chunks"].count_documents({"files_id": left}) == 0
    assert db["fs.chunks"].count_documents({"files_id": announced}) == 1  # the live upload's, kept


def test_marks_left_by_earlier_writes_are_swept_without_losing_a_stored_chunk(settings):
    """Writes no longer mark their files partial (the upload's hold names them until they are recorded);
    files an earlier version marked are kept by gc when a chunk record names them, their mark cleared."""
    repo = open_store(settings, "admin")
    data = payload(3 * MiB)
    image = put(repo, data, "stored")
    db = repo.db
    assert db["fs.files"].count_documents({"metadata.partial": True}) == 0
    db["fs.files"].update_many({}, {"$set": {"metadata.partial": True}})  # as an earlier version left them

    report = repo.collect_stale_uploads()

    assert report.bytes_freed == 0
    assert db["fs.files"].count_documents({"metadata.partial": True}) == 0
    assert downloaded(repo, image.id) == data
    assert_consistent(db)


def test_a_write_cut_off_before_its_chunk_record_is_removed_with_the_dead_uploads_holds(settings):
    """What the partial mark once guarded: a file written, its chunk record never made, its upload gone.
    The hold that named it before it was written is how the next upload's start finds and removes it."""
    from bson import ObjectId

    repo = open_store(settings, "admin")
    db = repo.db
    upload_id = repo.begin_upload(ImageMeta(name="cut-off"), 5)
    fid = ObjectId()
    db.holds.insert_one({"holder": upload_id, "chunks": [], "files": [fid]})  # announced, then written:
    db["fs.files"].insert_one({"_id": fid, "length": 5, "chunkSize": 5, "metadata": {"chunk": True}})
    db["fs.chunks"].insert_one({"files_id": fid, "n": 0, "data": b"bytes"})
    db.images.update_one({"_id": upload_id}, {"$set": {"upload.pid": 999_999_999}})  # and then it died

    report = repo.collect_stale_uploads()

    assert report.bytes_freed == 5 and report.uploads_removed == 1
    assert db["fs.files"].find_one({"_id": fid}) is None and db["fs.chunks"].count_documents({"files_id": fid}) == 0
    assert db.holds.count_documents({"holder": upload_id}) == 0


def test_a_pull_taking_over_a_killed_ones_holds_removes_the_files_it_never_recorded(settings):
    """A killed pull's hold names a file it wrote but never recorded; the pull that takes the holds over
    (keep_recorded) removes that file and keeps the recorded ones, so dropping the holds at its commit
    leaves no file that nothing names (`repo gc` would report it as files_removed)."""
    from bson import ObjectId

    repo = open_store(settings, "admin")
    db = repo.db
    data = payload(MiB)
    image = put(repo, data, "stored")
    kept = db.blobs.find_one({"_id": image.sha256})["chunks"][0]
    kept_file = db.chunks.find_one({"_id": kept})["file_id"]
    cut_off = ObjectId()
    db["fs.files"].insert_one({"_id": cut_off, "length": 5, "chunkSize": 5, "metadata": {"chunk": True}})
    db["fs.chunks"].insert_one({"files_id": cut_off, "n": 0, "data": b"bytes"})
    db.holds.insert_one({"holder": "pulled-image", "chunks": [kept, "f" * 64], "files": [kept_file, cut_off]})

    repo.blobs.chunks.keep_recorded("pulled-image")

    (hold,) = db.holds.find({"holder": "pulled-image"})
    assert hold["chunks"] == [kept] and hold["files"] == [kept_file]
    assert db["fs.files"].find_one({"_id": cut_off}) is None
    assert db["fs.chunks"].count_documents({"files_id": cut_off}) == 0
    assert downloaded(repo, image.id) == data


def test_an_image_whose_chunks_repeat_across_read_windows_reads_back_whole(settings, monkeypatch):
    """Chunk records are looked up a window at a time; a chunk that repeats one of an earlier window (a
    raw disk's runs of zeros) must still be found. The window is made small so a few MiB cross several."""
    from rain.repository import chunks

    monkeypatch.setattr(chunks, "READ_AHEAD", 4)
    repo = open_store(settings, "admin")
    data = payload(6 * MiB) * 4  # after its first cut each copy is cut as the one before: its chunks repeat
    image = put(repo, data, "repeats")
    order = repo.db.blobs.find_one({"_id": image.sha256})["chunks"]
    assert len(order) > len(set(order)) and len(order) > 2 * chunks.READ_AHEAD  # repeats, over several windows

    assert downloaded(repo, image.id) == data
    assert downloaded(repo, image.id, 5 * MiB + 7, 12 * MiB) == data[5 * MiB + 7:17 * MiB + 7]  # a range too
