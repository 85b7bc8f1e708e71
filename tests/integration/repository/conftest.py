"""The two Repository implementations, side by side, for the contract suite.

`backend` is parametrized: "store" is rain.repository.store.Store opened with
connect.open_store; "client" is rain.repository.client.Client talking to a real
`fg-image serve` subprocess with tokens the store issued. Both act on the same
kind of fresh database; `backend.db` lets a test look at what is really stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymongo.database import Database

from rain.config import Settings
from rain.repository.client import Client
from rain.repository.connect import open_database, open_store
from rain.repository.store import Store


@dataclass
class Backend:
    kind: str
    settings: Settings
    db: Database
    admin_store: Store
    url: str | None = None
    _repos: dict[str, Any] = field(default_factory=dict)

    def as_user(self, name: str) -> Any:
        """The repository as user `name` (who must exist)."""
        if name not in self._repos:
            self._repos[name] = self.connect(name)
        return self._repos[name]

    def connect(self, name: str) -> Any:
        """A new connection as `name`: its own MongoClient, or its own HTTP session and token."""
        if self.kind == "store":
            return open_store(self.settings, name)
        return Client(str(self.url), self.admin_store.issue_token(name), timeout=60)

    @property
    def admin(self) -> Any:
        return self.as_user("admin")

    def users(self, *names: str, quota: int | None = None) -> list[Any]:
        """Create users through the backend itself and return a repository for each."""
        for name in names:
            self.admin.add_user(name, quota=quota)
        return [self.as_user(n) for n in names]

    # -- what is really in the database ---------------------------------------------------

    def gridfs_files(self) -> int:
        return self.db["fs.files"].count_documents({})

    def gridfs_chunks(self) -> int:
        return self.db["fs.chunks"].count_documents({})

    def contents(self) -> int:
        """Distinct contents stored (blobs), however many images have each."""
        return self.db.blobs.count_documents({})

    def stored_bytes(self) -> int:
        """Bytes stored once: the sizes of the distinct chunks, each with exactly one GridFS file."""
        chunks = list(self.db.chunks.find({}, {"size": 1, "file_id": 1}))
        assert self.gridfs_files() == len(chunks) == self.gridfs_chunks()
        return sum(c["size"] for c in chunks)

    def used_bytes(self, name: str) -> int:
        return int(self.db.users.find_one({"_id": name})["used_bytes"])


@pytest.fixture(params=["store", "client"])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    db = open_database(settings)
    admin_store = open_store(settings, "admin")  # the first user of a repository becomes its admin
    if request.param == "store":
        yield Backend("store", settings, db, admin_store)
        return
    svc = request.getfixturevalue("service")
    yield Backend("client", settings, db, admin_store, url=svc.url)


@pytest.fixture
def admin_store(settings: Settings) -> Store:
    """The repository's administrator, straight on the database (the first user of a repository)."""
    return open_store(settings, "admin")
