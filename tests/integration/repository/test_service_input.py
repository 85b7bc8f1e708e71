"""Hostile input to the repository service: every bad request is a 4xx with a one-line message.

The same rules hold in direct mode (the Store the CLI uses without a service), with
the same message, and a refused request leaves nothing behind.
"""

from __future__ import annotations

import json

import pytest
import requests

from rain.errors import InvalidInput
from rain.repository.connect import open_database, open_store
from rain.repository.models import ImageMeta

pytestmark = pytest.mark.integration
API = "/api/v1"
BIG = 2**64  # past what a BSON integer holds (2**63 - 1); the service takes at most 2**53 - 1


@pytest.fixture
def people(settings, service):
    """Tokens for admin and alice (a plain user) on a running service."""
    admin = open_store(settings, "admin")
    admin.add_user("alice")
    return {name: admin.issue_token(name) for name in ("admin", "alice")}


def call(service, method: str, path: str, token: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.request(method, service.url + API + path, headers=headers, timeout=60, **kwargs)


def refused(response: requests.Response, status: int = 400, kind: str = "invalid_input") -> str:
    """The message of an error answer, after checking it has the service's one-line error shape."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "message", "hint"} and body["error"] == kind, body
    assert body["message"] and "\n" not in body["message"]
    return str(body["message"])


def test_integers_beyond_64_bits_are_refused_not_a_server_error(service, people, settings):
    admin, alice = people["admin"], people["alice"]
    assert "quota_bytes" in refused(call(service, "POST", "/users", admin, json={"name": "big", "quota_bytes": BIG}))
    assert "quota_bytes" in refused(call(service, "PUT", "/users/alice/quota", admin, json={"quota_bytes": BIG}))
    assert "size" in refused(call(service, "POST", "/images", alice, json={"meta": {"name": "huge"}, "size": BIG}))
    assert "limit" in refused(call(service, "GET", f"/history?limit={BIG}", alice))
    assert "skip" in refused(call(service, "GET", f"/images?skip={BIG}", alice))

    db = open_database(settings)
    assert db.users.find_one({"_id": "big"}) is None
    assert db.users.find_one({"_id": "alice"})["quota_bytes"] is None
    assert db.images.count_documents({}) == 0


def test_an_unlimited_quota_still_ends_at_what_a_64_bit_counter_holds(service, people, settings):
    """A counter near its end (1024 uploads of 8 PiB) refuses the next one: it must not overflow (HTTP 5xx)."""
    db = open_database(settings)
    db.users.update_one({"_id": "alice"}, {"$set": {"used_bytes": 2**63 - 10}})
    message = refused(call(service, "POST", "/images", people["alice"], json={"meta": {"name": "more"}, "size": 100}),
                      413, "quota_exceeded")
    assert "quota exceeded" in message
    assert db.users.find_one({"_id": "alice"})["used_bytes"] == 2**63 - 10
    assert db.images.count_documents({}) == 0


def test_history_limit_must_be_within_1_to_10000(service, people):
    """limit=0 meant 'no limit' to the database, and a negative one a different query."""
    for limit in (0, -1, 10_001):
        assert "limit" in refused(call(service, "GET", f"/history?limit={limit}", people["alice"]))
    assert call(service, "GET", "/history?limit=10000", people["alice"]).status_code == 200


def test_direct_mode_refuses_the_same_integers_with_the_same_message(service, people, settings):
    over_http = refused(call(service, "PUT", "/users/alice/quota", people["admin"], json={"quota_bytes": BIG}))
    admin = open_store(settings, "admin")
    with pytest.raises(InvalidInput) as e:
        admin.set_quota("alice", BIG)
    assert e.value.message == over_http
    with pytest.raises(InvalidInput, match="quota_bytes"):
        admin.add_user("big", quota=BIG)
    with pytest.raises(InvalidInput, match="limit"):
        admin.history(limit=0)
    with pytest.raises(InvalidInput, match="size"):
        admin.begin_upload(ImageMeta(name="huge"), BIG)
    assert open_database(settings).users.find_one({"_id": "big"}) is None


UNSTORABLE_PROVENANCE = [
    ({"bad\u0000key": 1}, "NUL"),
    ({"$where": "sleep(1)"}, "'$'"),
    ({"outer": {"a.b": 1}}, "'.'"),
    ({"n": BIG}, "2**53"),
    ({"packages": ["x" * 1000] * 2000}, "the limit is"),
    ({"deep": json.loads("[" * 40 + "]" * 40)}, "nested deeper"),
]


def test_unstorable_provenance_is_refused_and_nothing_is_reserved(service, people, settings):
    for provenance, why in UNSTORABLE_PROVENANCE:
        response = call(service, "POST", "/images", people["alice"],
                        json={"meta": {"name": "img", "provenance": provenance}, "size": 10})
        assert why in refused(response), why
    db = open_database(settings)
    assert db.images.count_documents({}) == 0
    assert db.users.find_one({"_id": "alice"})["used_bytes"] == 0


def test_json_bodies_have_a_size_limit(service, people, settings):
    big = b'{"meta": {"name": "img", "description": "' + b"x" * (8 << 20) + b'"}, "size": 1}'
    message = refused(call(service, "POST", "/images", people["alice"], data=big,
                           headers={"Content-Type": "application/json"}), 413, "too_large")
    assert "limit" in message

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]

    refused(call(service, "POST", "/images", people["alice"], data=chunked(),
                 headers={"Content-Type": "application/json"}), 413, "too_large")
    assert open_database(settings).images.count_documents({}) == 0


BAD_META = [
    ({"name": "img\n"}, "name"),
    ({"name": "img", "os": {"family": "debian\nrelease: 12"}}, "os.family"),
    ({"name": "img", "os": {"release": "1" * 10_000}}, "os.release"),
    ({"name": "img", "os": {"arch": "x86\u000064"}}, "os.arch"),
    ({"name": "img", "description": "a\u0000b"}, "description"),
    ({"name": "img", "tags": ["t"] * 1000}, "tags"),
    ({"name": "img", "parent": "../../etc"}, "parent"),
]


def test_control_characters_and_unbounded_lengths_are_refused(service, people, settings):
    for meta, field in BAD_META:
        message = refused(call(service, "POST", "/images", people["alice"], json={"meta": meta, "size": 1}))
        assert message.startswith(f"meta.{field}:"), message
    assert open_database(settings).images.count_documents({}) == 0


def test_unknown_routes_methods_and_bodies_answer_in_the_error_shape(service, people):
    refused(call(service, "GET", "/no-such-thing", people["alice"]), 404, "not_found")
    refused(call(service, "DELETE", "/whoami", people["alice"]), 405, "invalid_input")
    deep = "[" * 100_000 + "]" * 100_000
    refused(call(service, "POST", "/images", people["alice"], data=deep, headers={"Content-Type": "application/json"}))
    refused(call(service, "GET", "/history?limit=lots", people["alice"]))
    assert "user name" in refused(call(service, "DELETE", "/users/NUL%00name", people["admin"]))


def test_the_cli_in_direct_mode_refuses_with_one_line_and_exit_2(fg):
    """Without a service the CLI drives the Store itself: the same rules, the same messages."""
    assert fg("users", "add", "alice").returncode == 0
    refusals = ((["history", "--limit", "0"], "limit"), (["users", "quota", "alice", "99999999T"], "quota_bytes"))
    for args, what in refusals:
        result = fg(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and what in lines[0], result.stderr


@pytest.mark.parametrize("bad", ["../users", "x?force=true", "a/share"])
def test_the_client_sends_a_typed_id_as_one_path_segment(service, people, bad):
    """`fg-image --repo URL show ../users` asked GET /api/v1/users (another endpoint, with the user's own
    token) and crashed parsing the answer; each id or name is now one quoted segment the service refuses."""
    from rain.repository.client import Client

    alice = Client(service.url, people["alice"], timeout=30)
    with pytest.raises(InvalidInput, match="image id"):
        alice.show(bad)
    with pytest.raises(InvalidInput, match="image id"):
        alice.remove(bad)
