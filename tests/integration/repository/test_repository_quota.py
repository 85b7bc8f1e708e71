"""Quota under concurrency: ten 20 MiB uploads race for a 100 MiB quota, directly and through the service."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.repository import payload, put

from rain.errors import QuotaExceeded

pytestmark = pytest.mark.integration
MiB = 1 << 20
QUOTA, SIZE, UPLOADS = 100 * MiB, 20 * MiB, 10


def test_concurrent_uploads_never_exceed_the_quota(backend):
    backend.users("alice", quota=QUOTA)
    base = payload(SIZE)
    datas = [i.to_bytes(4, "big") + base[4:] for i in range(UPLOADS)]  # ten distinct contents
    repos = [backend.connect("alice") for _ in range(UPLOADS)]  # as ten processes would

    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], backend.used_bytes("alice"))
            done.wait(0.02)

    def upload(i: int):
        try:
            return put(repos[i], datas[i], f"race-{i}")
        except QuotaExceeded as e:
            return e

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = threading.Barrier(UPLOADS)
    with ThreadPoolExecutor(UPLOADS) as pool:
        outcomes = list(pool.map(lambda i: (start.wait(), upload(i))[1], range(UPLOADS)))
    done.set()
    watcher.join()

    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    stored = [o for o in outcomes if not isinstance(o, QuotaExceeded)]
    assert len(stored) == QUOTA // SIZE and len(refused) == UPLOADS - QUOTA // SIZE
    for e in refused:
        assert e.message.startswith("quota exceeded:") and "alice" in e.message and "100.0 MiB" in e.message
        assert "\n" not in e.message
    assert peak[0] <= QUOTA

    available = backend.as_user("alice").list()
    assert sorted(i.id for i in available) == sorted(i.id for i in stored)
    assert backend.used_bytes("alice") == sum(i.size for i in available) == QUOTA
    assert backend.db.images.count_documents({"status": "uploading"}) == 0
    # the quota charged each image whole; the store kept the shared tail of the contents once
    assert backend.contents() == len(stored) and SIZE <= backend.stored_bytes() < 2 * SIZE
