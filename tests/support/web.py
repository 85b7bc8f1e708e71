"""A repository for the web catalog's tests: alice, bob and an administrator, each with a token, and
images of every kind of access between them; signing in through the real form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests

from rain.config import Settings
from rain.repository.connect import open_store
from rain.repository.models import Image, Role
from support.repository import payload, put

DEBIAN = {"family": "debian", "release": "12", "arch": "x86_64"}
ROCKY = {"family": "rocky", "release": "9", "arch": "x86_64"}


@dataclass
class Catalog:
    tokens: dict[str, str]
    images: dict[str, Image] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)

    def id(self, name: str) -> str:
        return self.images[name].id


def seed(settings: Settings) -> Catalog:
    """Users admin (an administrator), alice and bob, and their images:

    alice: alpha (public, debian), alice-private (private, rocky, tagged hpc), alice-shares (shared with bob)
    bob:   bob-secret (private), bob-public (public, rocky), bob-shares (shared with alice)
    """
    admin = open_store(settings, "admin")
    if not admin.accounts.exists("admin"):
        admin.add_user("admin", Role.ADMIN)
    for user in ("alice", "bob"):
        admin.add_user(user, quota=1 << 30)
    catalog = Catalog({user: admin.issue_token(user) for user in ("admin", "alice", "bob")})
    stores = {user: open_store(settings, user) for user in ("alice", "bob")}

    def add(owner: str, name: str, os: dict[str, str], **meta: Any) -> None:
        data = payload(20_000 + len(catalog.images) * 1000, name.encode())
        catalog.images[name] = put(stores[owner], data, name, os=os, **meta)
        catalog.data[name] = data

    add("alice", "alpha", DEBIAN, public=True, tags=["base"])
    add("alice", "alice-private", ROCKY, tags=["hpc"])
    add("alice", "alice-shares", DEBIAN)
    stores["alice"].share(catalog.id("alice-shares"), ["bob"])
    add("bob", "bob-secret", DEBIAN)
    add("bob", "bob-public", ROCKY, public=True)
    add("bob", "bob-shares", DEBIAN)
    stores["bob"].share(catalog.id("bob-shares"), ["alice"])
    return catalog


def add_many(settings: Settings, owner: str = "alice", count: int = 55) -> list[str]:
    """`count` small images of `owner` named many-00, many-01, ... (oldest first), tagged `many`."""
    store = open_store(settings, owner)
    names = [f"many-{n:02d}" for n in range(count)]
    for n, name in enumerate(names):
        put(store, n.to_bytes(4, "big") * 10, name, tags=["many"])
    return names


def signed_in(url: str, token: str) -> requests.Session:
    """A requests session signed in through the sign-in form (as a browser posts it)."""
    session = requests.Session()
    answer = session.post(url + "/signin", data={"token": token}, headers={"Origin": url}, allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return session


def csrf_of(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)
