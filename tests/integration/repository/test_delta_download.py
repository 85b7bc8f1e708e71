"""Delta downloads from the service: chunks found in seed files or the chunk cache are not fetched again,
counted on the wire; the whole sha256 is checked; other users' private images stay out of reach."""

from __future__ import annotations

import hashlib
import random

import pytest
from support.repository import client_for, payload, put, refused, variant
from support.wire import counting_relay

from rain.errors import InvalidInput, NotFound
from rain.repository import client_delta
from rain.repository.chunk_cache import ChunkCache

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 32 * MiB



def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_variant_downloads_with_its_parent_as_seed_fetching_only_the_changed_chunks(admin_store, service,
                                                                                      tmp_path):
    base = random.Random(3).randbytes(SIZE)
    derived = variant(base, 4)
    repo = client_for(admin_store, service.url)
    put(repo, base, "base")
    image = put(repo, derived, "variant")
    seed = tmp_path / "base.raw"
    seed.write_bytes(base)
    no_cache = ChunkCache(tmp_path / "none", 0)

    with counting_relay(service.url) as wire:
        far = client_for(admin_store, wire.url)
        got = client_delta.get(far, image.id, tmp_path / "cold.part", [], no_cache, None)
        assert wire.received >= len(derived) and got.fetched == len(derived)  # nothing to reuse: all of it
        wire.reset()
        got = client_delta.get(far, image.id, tmp_path / "seeded.part", [seed], no_cache, None)
        assert wire.received <= 0.15 * len(derived), wire.received
    assert got.local + got.fetched == len(derived) and got.fetched <= 0.15 * len(derived)
    assert digest(tmp_path / "seeded.part") == image.sha256 == digest(tmp_path / "cold.part")
    assert admin_store.show(image.id).access_count == 2  # one access per download, however many requests


def test_the_chunk_cache_serves_a_second_download_and_a_damaged_entry_is_fetched_again(admin_store, service,
                                                                                       tmp_path):
    data = payload(12 * MiB)
    image = put(client_for(admin_store, service.url), data, "cached")
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    with counting_relay(service.url) as wire:
        far = client_for(admin_store, wire.url)
        client_delta.get(far, image.id, tmp_path / "one", [], cache, None)
        wire.reset()
        again = client_delta.get(far, image.id, tmp_path / "two", [], cache, None)
        assert again.fetched == 0 and wire.received < 64 << 10  # the chunk list only

        victim = sorted(cache.files(), key=lambda e: e.name)[0]
        with open(victim.path, "r+b") as f:
            f.write(b"\xff" * 16)
        third = client_delta.get(far, image.id, tmp_path / "three", [], cache, None)
    assert 0 < third.fetched <= 4 * MiB
    assert digest(tmp_path / "two") == digest(tmp_path / "three") == image.sha256

    small = ChunkCache(tmp_path / "cache", 3 * MiB)  # a smaller bound: the oldest chunks go
    small.trim()
    assert sum(e.stat().st_size for e in small.files()) <= 3 * MiB


def test_a_raw_disk_full_of_zeros_fetches_its_repeated_chunk_once(admin_store, service, tmp_path):
    data = payload(2 * MiB) + bytes(40 * MiB) + payload(2 * MiB)
    image = put(client_for(admin_store, service.url), data, "sparse")
    with counting_relay(service.url) as wire:
        got = client_delta.get(client_for(admin_store, wire.url), image.id, tmp_path / "disk", [],
                               ChunkCache(tmp_path / "none", 0), None)
        # the random ends with the zeros beside them (up to 4 MiB chunks each) and one all-zero chunk
        assert wire.received < 16 * MiB, wire.received
    assert got.fetched < 16 * MiB and digest(tmp_path / "disk") == image.sha256


def test_chunks_of_a_private_image_are_out_of_reach_of_other_users(admin_store, service, tmp_path):
    admin_store.add_user("alice")
    admin_store.add_user("bob")
    private = put(client_for(admin_store, service.url, "alice"), payload(2 * MiB), "secret")
    bob = client_for(admin_store, service.url, "bob")
    assert "no image" in refused(NotFound, lambda: bob._json("GET", f"/images/{private.id}/chunks"))
    assert "no image" in refused(NotFound, lambda: bob._call("GET", f"/images/{private.id}/chunks/data",
                                                             params={"first": 0, "count": 1}))
    owner = client_for(admin_store, service.url, "alice")
    message = refused(InvalidInput, lambda: owner._call("GET", f"/images/{private.id}/chunks/data",
                                                        params={"first": 999, "count": 1}))
    assert "not in image" in message
    assert not (tmp_path / "x.part").exists()
