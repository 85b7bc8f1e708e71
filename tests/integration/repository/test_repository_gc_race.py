"""Garbage collection running while uploads go on never takes the bytes of an upload."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.repository import payload, put

from rain.repository.connect import open_store

pytestmark = pytest.mark.integration
UPLOADS, WORKERS = 30, 3


def test_gc_during_uploads_keeps_every_uploaded_image_whole(settings):
    admin = open_store(settings, "admin")
    stop = threading.Event()
    collected = []

    def collect() -> None:
        repo = open_store(settings, "admin")
        while not stop.is_set():
            collected.append(repo.gc())

    def upload(worker: int) -> list[tuple[str, bytes]]:
        repo = open_store(settings, "admin")
        done = []
        for i in range(UPLOADS):
            data = payload(300_000)
            done.append((put(repo, data, f"w{worker}-{i}").id, data))
        return done

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            uploaded = [item for batch in pool.map(upload, range(WORKERS)) for item in batch]
    finally:
        stop.set()
        collector.join()

    assert len(collected) > 1
    for image_id, data in uploaded:
        out = io.BytesIO()
        admin.get(image_id, out)
        assert out.getvalue() == data
    assert sum(r.files_removed for r in collected) == 0  # nothing was garbage
