"""`repo pull` from a source that lies: a real HTTP server on 127.0.0.1 answering the Rain API with
crafted records. A pull must not loop on a lineage that cycles, walk an endless one, or take a record
for an image other than the one it asked for."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rain.errors import IntegrityError, NotFound
from rain.repository.client_delta import read_run
from rain.repository.models import ImageChunks
from rain.repository.pull import LINEAGE_MAX, SourceClient, plan

pytestmark = pytest.mark.integration


def record(image_id: str, parent: str | None = None) -> dict[str, Any]:
    return {"id": image_id, "name": "n", "owner": "alice", "os": {"family": "debian", "release": "12",
            "arch": "x86_64"}, "format": "raw", "size": 1, "sha256": "0" * 64, "status": "available",
            "created": "2026-01-01T00:00:00Z", "parent": parent}


class Lies:
    """What the fake source answers for GET /api/v1/images/{id}; the ids it was asked for."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []
        self.endless: set[str] = set()
        """Paths answered with an endless body."""


@pytest.fixture
def source() -> Iterator[tuple[SourceClient, Lies]]:
    lies = Lies()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path in lies.endless:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"{" * (1 << 20))
                except OSError:
                    return  # the client hung up: what it should do
            if path == "/healthz":
                self._answer(200, {"status": "ok"})
                return
            image_id = path.rsplit("/", 1)[-1]
            lies.asked.append(image_id)
            if image_id in lies.records:
                self._answer(200, lies.records[image_id])
            else:
                self._answer(404, {"error": "not_found", "message": f"no image {image_id}"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SourceClient(f"http://127.0.0.1:{server.server_address[1]}", "rain_token", 10), lies
    finally:
        server.shutdown()
        server.server_close()


def test_a_lineage_that_cycles_is_walked_once(source):
    client, lies = source
    lies.records = {"aaaaaaaaaaaa": record("aaaaaaaaaaaa", "bbbbbbbbbbbb"),
                    "bbbbbbbbbbbb": record("bbbbbbbbbbbb", "aaaaaaaaaaaa")}
    images = plan(client, ["aaaaaaaaaaaa"], None)
    assert [i.id for i in images] == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert len(lies.asked) == 2


def test_an_endless_lineage_stops_at_the_limit(source):
    client, lies = source
    ids = [f"{n:012x}" for n in range(1, 500)]
    lies.records = {i: record(i, f"{int(i, 16) + 1:012x}") for i in ids}
    images = plan(client, [ids[0]], None)
    assert len(images) == LINEAGE_MAX + 1 and images[-1].id == ids[0], "the asked-for image comes last"
    assert len(lies.asked) == LINEAGE_MAX + 1


def test_a_record_for_another_image_is_refused(source):
    client, lies = source
    lies.records = {"aaaaaaaaaaaa": record("cccccccccccc")}
    with pytest.raises(IntegrityError) as e:
        plan(client, ["aaaaaaaaaaaa"], None)
    assert "answered for image aaaaaaaaaaaa with image cccccccccccc" in e.value.one_line()


def test_an_unreadable_image_is_not_found_and_an_unreadable_parent_stays_behind(source):
    client, lies = source
    lies.records = {"aaaaaaaaaaaa": record("aaaaaaaaaaaa", "dddddddddddd")}
    assert [i.id for i in plan(client, ["aaaaaaaaaaaa"], None)] == ["aaaaaaaaaaaa"]
    with pytest.raises(NotFound) as e:
        plan(client, ["eeeeeeeeeeee"], None)
    assert "or its token may not read it" in e.value.one_line()


def test_answers_without_end_are_cut_off(source):
    """Chunk data past what was asked for, and a record of endless JSON: refused at the bound, in one
    line, with this process's memory never holding more than the bound."""
    client, lies = source
    lies.endless = {"/api/v1/images/aaaaaaaaaaaa/chunks/data", "/api/v1/images/bbbbbbbbbbbb"}
    info = ImageChunks(id="aaaaaaaaaaaa", sha256="1" * 64, size=1000, chunks=["2" * 64], sizes=[1000])
    with pytest.raises(IntegrityError) as e:
        read_run(client, info, 0, 1)
    assert "is over 1000 bytes" in e.value.one_line()
    client.max_json = 4 << 20
    with pytest.raises(IntegrityError) as e:
        client.show("bbbbbbbbbbbb")
    assert "is over 4194304 bytes" in e.value.one_line()
