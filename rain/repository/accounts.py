"""Users, roles and quotas; API tokens (stored only as sha256 hashes) live in tokens.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from rain.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded, Unauthorized
from rain.repository.fields import MAX_INT64
from rain.repository.models import Role, User, UserStatus, check_user_name
from rain.repository.tokens import TOKEN_PREFIX, Tokens, hash_token
from rain.sizes import human

__all__ = ["TOKEN_PREFIX", "Accounts", "hash_token", "human", "now"]


def now() -> datetime:
    return datetime.now(UTC)


def _user(doc: dict[str, Any]) -> User:
    return User(name=doc["_id"], role=doc.get("role", "user"), status=doc.get("status", "active"),
                quota_bytes=doc.get("quota_bytes"), used_bytes=doc.get("used_bytes", 0),
                created=doc.get("created"))


class Accounts:
    def __init__(self, db: Database) -> None:
        self.users = db["users"]
        self.tokens = Tokens(db)

    def get(self, name: str) -> User:
        doc = self.users.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"no user {name!r}", hint="see `fg-image users list`")
        return _user(doc)

    def exists(self, name: str) -> bool:
        return self.users.count_documents({"_id": name}, limit=1) > 0

    def is_empty(self) -> bool:
        return self.users.count_documents({}, limit=1) == 0

    def add(self, name: str, role: Role = Role.USER, quota: int | None = None) -> User:
        try:
            check_user_name(name)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        if quota is not None and quota < 0:
            raise InvalidInput(f"bad quota {quota}", hint="use a size such as 50G or 'unlimited'")
        doc = {"_id": name, "role": str(role), "status": str(UserStatus.ACTIVE), "quota_bytes": quota,
               "used_bytes": 0, "created": now()}
        try:
            self.users.insert_one(doc)
        except DuplicateKeyError:
            raise Conflict(f"user {name!r} exists already", hint="pick another name") from None
        return _user(doc)

    def remove(self, name: str) -> None:
        if self.users.delete_one({"_id": name}).deleted_count == 0:
            raise NotFound(f"no user {name!r}", hint="see `fg-image users list`")
        self.tokens.revoke_all(name)

    def list(self) -> list[User]:
        return [_user(d) for d in self.users.find({}).sort("_id", 1)]

    def update(self, name: str, **fields: Any) -> User:
        doc = self.users.find_one_and_update({"_id": name}, {"$set": fields},
                                             return_document=ReturnDocument.AFTER)
        if doc is None:
            raise NotFound(f"no user {name!r}", hint="see `fg-image users list`")
        return _user(doc)

    def user_for_token(self, token: str | None) -> User:
        if not token:
            raise Unauthorized("no API token given", hint="pass --token or set RAIN_TOKEN "
                               "(an administrator makes one with `fg-image users token NAME`)")
        return self.get(self.tokens.authenticate(token))

    # Quota: used_bytes moves only by atomic conditional increments.

    def reserve(self, name: str, size: int) -> None:
        user = self.get(name)
        # "unlimited" still ends at what a 64-bit counter holds: past it the $inc would fail (HTTP 500)
        limit = (MAX_INT64 if user.quota_bytes is None else user.quota_bytes) - size
        done = self.users.update_one(
            {"_id": name, "quota_bytes": user.quota_bytes, "used_bytes": {"$lte": limit}},
            {"$inc": {"used_bytes": size}})
        if done.matched_count == 0:  # not modified_count: an empty image adds 0 and modifies nothing
            fresh = self.get(name)
            raise QuotaExceeded(
                f"quota exceeded: {human(size)} more would bring {name} to "
                f"{human(fresh.used_bytes + size)} of {human(fresh.quota_bytes)}",
                hint="remove images you no longer need or ask an administrator for more quota")

    def release(self, name: str, size: int) -> None:
        self.users.update_one({"_id": name}, {"$inc": {"used_bytes": -size}})


def require_active(user: User) -> None:
    if user.status == UserStatus.SUSPENDED:
        raise Forbidden(f"user {user.name!r} is suspended", hint="ask an administrator to reinstate you")


def require_admin(user: User, what: str) -> None:
    if user.role != Role.ADMIN:
        raise Forbidden(f"only administrators may {what}", hint="ask an administrator")
