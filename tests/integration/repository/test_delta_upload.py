"""Delta uploads through the service: only the chunks the repository lacks cross the wire, counted on
the wire itself; chunk probing tells nobody about other users' private images."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
import requests
from support.repository import client_for, payload, put, refused, sha, variant
from support.wire import counting_relay

from rain.errors import IntegrityError, InvalidInput, NotFound
from rain.repository.chunks import manifest
from rain.repository.models import ImageMeta

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 32 * MiB



def test_a_variant_of_a_stored_image_sends_only_its_changed_chunks(admin_store, service):
    base = random.Random(1).randbytes(SIZE)
    with counting_relay(service.url) as wire:
        repo = client_for(admin_store, wire.url)
        first = put(repo, base, "node")
        assert wire.sent >= SIZE  # the first upload of new content sends it all

        for seed, (how, image_meta, bases) in enumerate((("parent", {"parent": first.id}, ()),
                                                         ("base", {}, (first.id,)))):
            data = variant(base, seed)
            wire.reset()
            image = repo.put(io.BytesIO(data), ImageMeta(name=f"other-{how}", **image_meta), len(data), sha(data),
                             bases=bases)
            assert wire.sent <= 0.15 * len(data), (how, wire.sent)
            assert image.sha256 == sha(data)

        wire.reset()  # next week's build of the same recipe: the newest image of that name is the base
        rebuilt = variant(base, 99)
        put(repo, rebuilt, "node")
        assert wire.sent <= 0.15 * len(rebuilt), wire.sent

    out = io.BytesIO()
    admin_store.get(image.id, out)
    assert out.getvalue() == data
    uploads = [e for e in admin_store.history(limit=20) if e.action == "upload"]
    assert len(uploads) == 4 and all(e.detail["delta"] for e in uploads)
    assert [e.detail["new_bytes"] for e in uploads][-1] == SIZE  # the first; the variants sent little
    assert all(e.detail["new_bytes"] <= 0.15 * SIZE for e in uploads[:-1])


def test_chunk_probing_does_not_reveal_another_users_private_image(admin_store, service):
    admin_store.add_user("alice")
    admin_store.add_user("bob")
    secret = payload(8 * MiB)
    alice = client_for(admin_store, service.url, "alice")
    private = put(alice, secret, "secret")
    with counting_relay(service.url) as wire:
        bob = client_for(admin_store, wire.url, "bob")
        plan = manifest(io.BytesIO(secret), len(secret))
        ticket = bob._json("POST", "/images", json={"meta": {"name": "probe"}, "size": len(secret)})
        upload = f"/uploads/{ticket['upload_id']}"

        # bob names chunks he guesses alice stores: all are "missing", exactly as unknown ones are
        unknown = [sha(bytes([i])) for i in range(3)]
        answer = bob._json("POST", f"{upload}/needs", json={"chunks": plan.chunks + unknown})
        assert sorted(answer["missing"]) == sorted(set(plan.chunks + unknown))
        # and he cannot name her private image as a base to learn it either
        assert "no image" in refused(NotFound, lambda: bob._json("POST", f"{upload}/needs",
                                                                   json={"chunks": plan.chunks,
                                                                         "bases": [private.id]}))
        bob._call("DELETE", upload)

        wire.reset()  # uploading the same bytes costs bob every byte on the wire, though they are stored once
        mine = put(bob, secret, "same-bytes")
        assert wire.sent >= len(secret)
    assert mine.sha256 == private.sha256
    assert sum(c["size"] for c in admin_store.db.chunks.find()) == len(secret)
    with counting_relay(service.url) as wire:  # an administrator may read every image: nothing to hide
        put(client_for(admin_store, wire.url), secret, "admin-copy")
        assert wire.sent < 0.05 * len(secret)
    assert admin_store.db.images.count_documents({"status": "uploading"}) == 0


def test_a_commit_that_does_not_add_up_is_refused_and_undoes_the_upload(admin_store, service):
    repo = client_for(admin_store, service.url)
    data = payload(3 * MiB)
    plan = manifest(io.BytesIO(data), len(data))

    def begin() -> str:
        return "/uploads/" + repo._json("POST", "/images", json={"meta": {"name": "bad"}, "size": len(data)})[
            "upload_id"]

    upload = begin()
    message = refused(InvalidInput, lambda: repo._json("POST", f"{upload}/commit",
                                                         json={"chunks": plan.chunks, "sha256": plan.sha256}))
    assert "never sent" in message
    assert admin_store.db.images.count_documents({}) == 0 and admin_store.whoami().used_bytes == 0

    upload = begin()
    first = plan.chunks[0]
    damaged = b"\0" * plan.sizes[0]
    message = refused(IntegrityError, lambda: repo._call(
        "POST", f"{upload}/chunks", data=damaged, headers={"X-Rain-Chunks": f"{first}:{len(damaged)}"}))
    assert "does not match its sha256" in message
    for header in ("nonsense", f"{first}:0", f"{first}:{8 * MiB}", ",".join([f"{first}:1"] * 65)):
        response = requests.post(service.url + "/api/v1" + upload + "/chunks", data=b"x",
                                 headers={"Authorization": repo.session.headers["Authorization"],
                                          "X-Rain-Chunks": header}, timeout=30)
        assert response.status_code == 400 and "X-Rain-Chunks" in response.json()["message"], header
    repo._call("DELETE", upload)
    assert admin_store.db.images.count_documents({}) == 0 and admin_store.db.holds.count_documents({}) == 0

    upload = begin()  # more bytes than the upload declared (and reserved quota for) are refused
    extra = [payload(MiB) for _ in range(4)]
    message = refused(InvalidInput, lambda: [repo._call("POST", f"{upload}/chunks", data=piece,
                                                        headers={"X-Rain-Chunks": f"{sha(piece)}:{len(piece)}"})
                                             for piece in extra])
    assert "declared as" in message
    assert sum(c["size"] for c in admin_store.db.chunks.find()) <= len(data)
    repo._call("DELETE", upload)

    other = payload(3 * MiB)  # chunks of other bytes, sent and committed under this file's sha256
    upload = begin()
    alien = manifest(io.BytesIO(other), len(other))
    for sha_, offset, n in zip(alien.chunks, alien.offsets(), alien.sizes, strict=True):
        repo._call("POST", f"{upload}/chunks", data=other[offset:offset + n], headers={"X-Rain-Chunks": f"{sha_}:{n}"})
    message = refused(IntegrityError, lambda: repo._json("POST", f"{upload}/commit",
                                                           json={"chunks": alien.chunks, "sha256": plan.sha256}))
    assert "checksum mismatch" in message
    assert admin_store.db.images.count_documents({}) == 0 and admin_store.db.chunks.count_documents({}) == 0
    assert admin_store.whoami().used_bytes == 0


def test_chunks_sent_with_offsets_that_lie_cannot_commit_under_the_wrong_checksum(admin_store, service):
    """The service hashes chunks sent as one run of the file as they arrive (X-Rain-Offset), so a commit
    need not read them back; a client that names the wrong order gets no image under a checksum its
    chunks do not give, and the right checksum still commits (the rest is read back)."""
    repo = client_for(admin_store, service.url)
    data = payload(6 * MiB)
    plan = manifest(io.BytesIO(data), len(data))
    assert len(plan.chunks) >= 3
    pieces = list(zip(plan.chunks, plan.offsets(), plan.sizes, strict=True))
    swapped = [pieces[1], pieces[0], *pieces[2:]]  # sent as if the second chunk began the file
    lie = hashlib.sha256(b"".join(data[o:o + n] for _, o, n in swapped)).hexdigest()

    def upload_with_lying_offsets() -> str:
        upload = "/uploads/" + repo._json("POST", "/images", json={"meta": {"name": "liar"}, "size": len(data)})[
            "upload_id"]
        at = 0
        for sha_, offset, n in swapped:
            repo._call("POST", f"{upload}/chunks", data=data[offset:offset + n],
                       headers={"X-Rain-Chunks": f"{sha_}:{n}", "X-Rain-Offset": str(at)})
            at += n
        return upload

    upload = upload_with_lying_offsets()
    message = refused(IntegrityError, lambda: repo._json("POST", f"{upload}/commit",
                                                           json={"chunks": plan.chunks, "sha256": lie}))
    assert "checksum mismatch" in message and admin_store.db.images.count_documents({}) == 0

    upload = upload_with_lying_offsets()
    image = repo._json("POST", f"{upload}/commit", json={"chunks": plan.chunks, "sha256": plan.sha256})
    assert image["sha256"] == plan.sha256
    out = io.BytesIO()
    admin_store.get(image["id"], out)
    assert out.getvalue() == data

    upload = "/uploads/" + repo._json("POST", "/images", json={"meta": {"name": "bad"}, "size": len(data)})[
        "upload_id"]
    response = requests.post(service.url + "/api/v1" + upload + "/chunks", data=b"x",
                             headers={"Authorization": repo.session.headers["Authorization"],
                                      "X-Rain-Chunks": f"{plan.chunks[0]}:1", "X-Rain-Offset": "-1"}, timeout=30)
    assert response.status_code == 400 and "X-Rain-Offset" in response.json()["message"]
    repo._call("DELETE", upload)
