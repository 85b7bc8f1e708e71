"""The repository service over plain HTTP: who may see what, status codes, Range, ETag, schema."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest
import requests
from support.repository import payload, put, sha

from rain.repository.accounts import hash_token
from rain.repository.client import Client
from rain.repository.connect import open_database, open_store
from rain.repository.models import ImageChanges

pytestmark = pytest.mark.integration
API = "/api/v1"


@pytest.fixture
def people(settings, service):
    """Tokens for admin, alice, bob, carol on a running service (alice, bob, carol are plain users)."""
    admin = open_store(settings, "admin")
    for name in ("alice", "bob", "carol"):
        admin.add_user(name)
    return {name: admin.issue_token(name) for name in ("admin", "alice", "bob", "carol")}


def call(service, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, service.url + path, headers=headers, timeout=30, **kwargs)


def listed(service, token: str) -> list[str]:
    response = call(service, "GET", f"{API}/images", token)
    assert response.status_code == 200
    return [i["id"] for i in response.json()]


def test_private_images_are_visible_to_owner_shares_admins_and_once_public_everyone(service, people):
    alice = Client(service.url, people["alice"])
    data = payload(200_000)
    image = put(alice, data, "alices")

    def can_read(who: str) -> bool:
        show = call(service, "GET", f"{API}/images/{image.id}", people[who])
        fetch = call(service, "GET", f"{API}/images/{image.id}/data", people[who])
        visible = image.id in listed(service, people[who])
        assert show.status_code == fetch.status_code, who
        if show.status_code == 404:
            assert not visible and show.json()["error"] == "not_found"
            return False
        assert show.status_code == 200 and visible and fetch.content == data
        return True

    assert [can_read(w) for w in ("alice", "bob", "carol", "admin")] == [True, False, False, True]
    alice.share(image.id, ["bob"])
    assert [can_read(w) for w in ("alice", "bob", "carol", "admin")] == [True, True, False, True]
    alice.modify(image.id, ImageChanges(public=True))
    assert [can_read(w) for w in ("alice", "bob", "carol", "admin")] == [True, True, True, True]


def test_no_token_bad_token_and_suspended_user_are_refused(service, people, settings):
    for token in (None, "rain_not-a-token"):
        response = call(service, "GET", f"{API}/images", token)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        # who is asking is settled first: a stranger learns nothing from how the body is judged
        response = call(service, "POST", f"{API}/images", token, data=b"{not json",
                        headers={"Content-Type": "application/json"})
        assert response.status_code == 401

    open_store(settings, "admin").suspend("bob")
    response = call(service, "GET", f"{API}/images", people["bob"])
    assert response.status_code == 403
    assert "suspended" in response.json()["message"]
    assert call(service, "GET", f"{API}/images", people["alice"]).status_code == 200


def test_malformed_json_is_a_400_with_a_one_line_message(service, people):
    response = call(service, "POST", f"{API}/images", people["alice"], data=b'{"meta": {"name": ',
                    headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["message"] and "\n" not in body["message"]
    assert listed(service, people["admin"]) == []

    response = call(service, "POST", f"{API}/images", people["alice"], json={"meta": {"name": "x y"}, "size": 1})
    assert response.status_code == 400 and "\n" not in response.json()["message"]
    response = call(service, "GET", f"{API}/images?sort=colour", people["alice"])
    assert response.status_code == 400 and "sort" in response.json()["message"]


def test_range_requests_etag_and_416(service, people):
    data = payload(3 << 20)
    image = put(Client(service.url, people["alice"]), data, "ranged")
    path = f"{API}/images/{image.id}/data"

    whole = call(service, "GET", path, people["alice"])
    assert whole.status_code == 200
    assert whole.headers["ETag"] == f'"{sha(data)}"'
    assert whole.headers["Accept-Ranges"] == "bytes"

    part = call(service, "GET", path, people["alice"], headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.content == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert part.headers["ETag"] == f'"{sha(data)}"'

    tail = call(service, "GET", path, people["alice"], headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    rest = call(service, "GET", path, people["alice"], headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.content == data[-10:]

    outside = call(service, "GET", path, people["alice"], headers={"Range": f"bytes={len(data)}-"})
    assert outside.status_code == 416
    assert outside.json()["error"] == "invalid_input" and "outside the image" in outside.json()["message"]


def test_openapi_schema_and_healthz(service):
    schema = requests.get(service.url + f"{API}/openapi.json", timeout=30)
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (f"{API}/images", f"{API}/images/{{image_id}}", f"{API}/images/{{image_id}}/data",
                 f"{API}/uploads/{{upload_id}}", f"{API}/users"):
        assert path in paths
    health = requests.get(service.url + "/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_tokens_are_stored_only_hashed(settings, service, people):
    db = open_database(settings)
    stored = list(db.tokens.find({}))
    assert len(stored) == len(people)
    dump = repr(stored)
    for name, token in people.items():
        assert token not in dump
        assert token.removeprefix("rain_") not in dump
        doc = db.tokens.find_one({"_id": hash_token(token)})
        assert doc is not None and doc["user"] == name
        assert doc["_id"] == hashlib.sha256(token.encode()).hexdigest()
    assert Client(service.url, people["carol"]).whoami().name == "carol"


def test_a_second_put_to_an_upload_in_progress_is_refused_and_spoils_nothing(service, people):
    alice = people["alice"]
    data = payload(3 << 20)
    ticket = call(service, "POST", f"{API}/images", alice, json={"meta": {"name": "twice"}, "size": len(data)})
    assert ticket.status_code == 201
    url = ticket.json()["upload_url"]
    first_sent, go_on = threading.Event(), threading.Event()

    class SlowBody(io.BytesIO):
        """The first MiB at once, the rest only once the second request has been answered."""

        def __len__(self) -> int:
            return len(data)

        def read(self, n: int = -1) -> bytes:
            if self.tell() >= 1 << 20 and not go_on.is_set():
                first_sent.set()
                go_on.wait(30)
            return super().read(min(n, 1 << 20) if n and n > 0 else 1 << 20)

    first: list[requests.Response] = []
    sender = threading.Thread(target=lambda: first.append(call(
        service, "PUT", url, alice, data=SlowBody(data), headers={"Content-Type": "application/octet-stream"})))
    sender.start()
    assert first_sent.wait(30)
    time.sleep(0.5)  # let the service start on the first request's bytes
    second = call(service, "PUT", url, alice, data=data, headers={"Content-Type": "application/octet-stream"})
    go_on.set()
    sender.join(60)

    assert second.status_code == 404 and second.json()["error"] == "not_found"
    assert first[0].status_code == 200, first[0].text
    image = first[0].json()
    assert image["sha256"] == sha(data)
    fetched = call(service, "GET", f"{API}/images/{image['id']}/data", alice)
    assert fetched.content == data
