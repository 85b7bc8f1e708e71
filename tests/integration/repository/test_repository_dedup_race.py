"""Identical content uploaded and removed at the same time by several users stays readable and is freed."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.repository import payload, put

from rain.repository.connect import open_store

pytestmark = pytest.mark.integration
ROUNDS, WORKERS = 25, 4


def test_same_content_put_and_removed_concurrently_stays_consistent(settings):
    admin = open_store(settings, "admin")
    data = payload(64 << 10)

    def churn(worker: int) -> int:
        repo = open_store(settings, "admin")
        for _ in range(ROUNDS):
            image = put(repo, data, f"same-{worker}")
            out = io.BytesIO()
            repo.get(image.id, out)  # fails if the bytes went with another worker's last reference
            assert out.getvalue() == data
            repo.remove(image.id)
        return ROUNDS

    with ThreadPoolExecutor(WORKERS) as pool:
        assert sum(pool.map(churn, range(WORKERS))) == ROUNDS * WORKERS

    db = admin.db
    assert admin.list() == []
    assert db.blobs.count_documents({}) == 0
    assert (db["fs.files"].count_documents({}), db["fs.chunks"].count_documents({})) == (0, 0)
    assert admin.whoami().used_bytes == 0
