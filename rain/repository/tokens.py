"""API tokens: named, optionally expiring, revocable one by one; only their sha256 is stored.

Shaped like GitHub's personal access tokens: a token has a public id and a name
for listing and revoking, and a secret that is shown once. A token document is
keyed by the secret's hash, so a request is authenticated by one indexed read.
Documents issued before tokens had ids (just `_id`, `user`, `created`) keep
working; they get an id the first time their owner lists them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from rain.errors import InvalidInput, NotFound, Unauthorized
from rain.repository.models import NewToken, TokenInfo

TOKEN_PREFIX = "rain_"
TOKEN_ID_RE = re.compile(r"^[0-9a-f]{10}$")
TOUCH_EVERY = timedelta(minutes=1)
"""last_used is written at most this often per token, so a busy client does not write on every request."""
LEGACY_NAME = "(issued before token names)"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return secrets.token_hex(5)


def _info(doc: dict[str, Any]) -> TokenInfo:
    return TokenInfo(id=doc.get("id", ""), user=doc["user"], name=doc.get("name", ""), created=doc.get("created"),
                     expires=doc.get("expires"), last_used=doc.get("last_used"))


def check_token_id(token_id: str) -> str:
    if not isinstance(token_id, str) or not TOKEN_ID_RE.fullmatch(token_id):
        raise InvalidInput(f"bad token id {token_id!r}",
                           hint="token ids are 10 hex digits; see `fg-image users token list`")
    return token_id


class Tokens:
    """The `tokens` collection. Callers (store.Store) decide who may do what; this only keeps the records."""

    def __init__(self, db: Database) -> None:
        self.coll = db["tokens"]

    def create(self, user: str, name: str = "", expires_in: int | None = None) -> NewToken:
        """A new secret for `user`; the secret is in the result and nowhere else."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        stamp = _now()
        doc: dict[str, Any] = {"_id": hash_token(secret), "user": user, "name": name, "created": stamp,
                               "expires": stamp + timedelta(seconds=expires_in) if expires_in else None,
                               "last_used": None}
        for _ in range(5):  # ten hex digits rarely collide; the unique index says when they do
            doc["id"] = _new_id()
            try:
                self.coll.insert_one(doc)
                break
            except DuplicateKeyError:
                continue
        else:
            raise RuntimeError("could not find a free token id")
        return NewToken(token=secret, **_info(doc).model_dump())

    def list(self, user: str) -> list[TokenInfo]:
        self._name_legacy(user)
        return [_info(d) for d in self.coll.find({"user": user}).sort([("created", 1), ("id", 1)])]

    def _name_legacy(self, user: str) -> None:
        """Give tokens from before ids an id, so they too can be revoked one by one."""
        for doc in self.coll.find({"user": user, "id": {"$exists": False}}, {"_id": 1}):
            try:
                self.coll.update_one({"_id": doc["_id"], "id": {"$exists": False}},
                                     {"$set": {"id": _new_id(), "name": LEGACY_NAME}})
            except DuplicateKeyError:
                pass  # the next listing tries another id

    def revoke(self, user: str, token_id: str) -> TokenInfo:
        doc = self.coll.find_one_and_delete({"user": user, "id": check_token_id(token_id)})
        if doc is None:
            raise NotFound(f"user {user!r} has no token {token_id}",
                           hint=f"see `fg-image users token list {user}`; another user's token: revoke ID --user NAME")
        return _info(doc)

    def revoke_all(self, user: str) -> int:
        return int(self.coll.delete_many({"user": user}).deleted_count)

    def authenticate(self, secret: str) -> str:
        """The name of the user `secret` belongs to; refused when unknown, revoked or expired."""
        doc = self.coll.find_one({"_id": hash_token(secret)})
        if doc is None:
            raise Unauthorized("the API token is not valid (unknown or revoked)",
                               hint="ask an administrator for a new one (`fg-image users token NAME`)")
        stamp = _now()
        expires = doc.get("expires")
        if expires is not None and expires <= stamp:
            label = f"{doc.get('name') or 'unnamed'} ({doc.get('id', '?')})"
            raise Unauthorized(f"the API token {label} expired at {expires:%Y-%m-%d %H:%M} UTC",
                               hint="make a new one with `fg-image users token NAME --expires 30d`")
        last = doc.get("last_used")
        if last is None or stamp - last >= TOUCH_EVERY:
            self.coll.update_one({"_id": doc["_id"]}, {"$set": {"last_used": stamp}})
        return str(doc["user"])
