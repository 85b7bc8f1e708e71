"""Named, expiring, revocable API tokens (issue #9, defect 9).

Tokens are managed over both faces (`backend`: the pymongo Store and the HTTP
Client); whether a token still lets its holder in is always asked of the real
`fg-image serve`, the only place tokens are checked.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from support.repository import refused

from rain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from rain.repository.accounts import hash_token
from rain.repository.client import Client

pytestmark = pytest.mark.integration


def as_holder(service: Any, token: str) -> Client:
    return Client(service.url, token, timeout=30)


def test_named_tokens_are_listed_without_secrets_and_revoked_one_by_one(backend, service):
    (alice,) = backend.users("alice")
    ci = alice.create_token("alice", "ci-runner")
    laptop = alice.create_token("alice", "laptop")
    assert (ci.user, ci.name, ci.token[:5]) == ("alice", "ci-runner", "rain_") and ci.id != laptop.id

    listed = {t.id: t for t in alice.list_tokens()}
    assert {listed[ci.id].name, listed[laptop.id].name} == {"ci-runner", "laptop"}
    assert listed[ci.id].created is not None and listed[ci.id].expires is None
    shown = repr([t.model_dump() for t in alice.list_tokens("alice")])
    for secret in (ci.token, laptop.token):
        assert secret not in shown and hash_token(secret) not in shown
    stored = repr(list(backend.db.tokens.find({})))  # only hashes are stored
    assert ci.token not in stored and ci.token.removeprefix("rain_") not in stored
    assert backend.db.tokens.find_one({"_id": hash_token(ci.token)})["id"] == ci.id

    assert as_holder(service, ci.token).whoami().name == "alice"
    assert alice.revoke_token("alice", ci.id).name == "ci-runner"
    assert "not valid" in refused(Unauthorized, lambda: as_holder(service, ci.token).whoami())
    assert as_holder(service, laptop.token).whoami().name == "alice"  # the other one still works
    assert ci.id not in {t.id for t in alice.list_tokens()}
    assert "no token" in refused(NotFound, lambda: alice.revoke_token("alice", ci.id))


def test_users_manage_only_their_own_tokens_and_an_admin_revokes_them_all(backend, service):
    alice, bob = backend.users("alice", "bob")
    first = alice.create_token("alice", "one")
    second = backend.admin.create_token("alice", "made-by-admin")
    for call in (lambda: bob.list_tokens("alice"), lambda: bob.create_token("alice"),
                 lambda: bob.revoke_token("alice", first.id), lambda: bob.revoke_tokens("alice"),
                 lambda: alice.revoke_tokens("alice")):
        refused(Forbidden, call)
    assert "no token" in refused(NotFound, lambda: bob.revoke_token("bob", first.id))  # not bob's
    assert as_holder(service, first.token).whoami().name == "alice"

    assert {first.id, second.id} <= {t.id for t in backend.admin.list_tokens("alice")}
    assert backend.admin.revoke_tokens("alice") >= 2
    for token in (first, second):
        refused(Unauthorized, lambda t=token: as_holder(service, t.token).whoami())
    assert backend.db.tokens.count_documents({"user": "alice"}) == 0
    assert bob.whoami().name == "bob"  # nobody else's tokens went
    assert [e.detail["name"] for e in backend.admin.history(user="admin") if e.action == "token-revoke-all"] == \
        ["alice"]


def test_an_expired_token_is_refused_with_one_line_naming_its_expiry(backend, service):
    (alice,) = backend.users("alice")
    brief = alice.create_token("alice", "brief", expires_in=2)
    assert brief.expires is not None and brief.expires > datetime.now(UTC)
    assert as_holder(service, brief.token).whoami().name == "alice"
    time.sleep(max(0.0, (brief.expires - datetime.now(UTC)).total_seconds()) + 0.3)
    message = refused(Unauthorized, lambda: as_holder(service, brief.token).whoami())
    assert "brief" in message and "expired" in message


def test_last_use_is_recorded_but_not_rewritten_on_every_request(backend, service):
    (alice,) = backend.users("alice")
    new = alice.create_token("alice", "watched")

    def last_used() -> datetime | None:
        return {t.id: t for t in alice.list_tokens()}[new.id].last_used

    assert last_used() is None
    before = datetime.now(UTC)
    as_holder(service, new.token).whoami()
    first = last_used()
    assert first is not None and first >= before.replace(microsecond=0)
    as_holder(service, new.token).list()
    assert last_used() == first  # within a minute of the last write: no new write


def test_tokens_from_before_names_keep_working_and_can_be_revoked(backend, service):
    (alice,) = backend.users("alice")
    secret = "rain_an-old-token-from-before-token-names"
    backend.db.tokens.insert_one({"_id": hash_token(secret), "user": "alice", "created": datetime.now(UTC)})
    assert as_holder(service, secret).whoami().name == "alice"

    [old] = [t for t in alice.list_tokens() if t.name.startswith("(issued before")]
    assert len(old.id) == 10 and old.last_used is not None
    alice.revoke_token("alice", old.id)
    refused(Unauthorized, lambda: as_holder(service, secret).whoami())


def test_bad_token_requests_are_refused_and_make_nothing(backend):
    (alice,) = backend.users("alice")
    count = backend.db.tokens.count_documents({})
    refused(InvalidInput, lambda: alice.create_token("alice", "two\nlines"))
    refused(InvalidInput, lambda: alice.create_token("alice", "x" * 65))
    refused(InvalidInput, lambda: alice.create_token("alice", "zero", expires_in=0))
    refused(NotFound, lambda: backend.admin.create_token("ghost", "for-nobody"))
    assert "token id" in refused(InvalidInput, lambda: alice.revoke_token("alice", "not-an-id"))
    assert backend.db.tokens.count_documents({}) == count
