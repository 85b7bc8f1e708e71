"""Open the repository this invocation should use: a remote service, or MongoDB directly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import pymongo
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

from rain.config import Settings
from rain.errors import ConfigError, Conflict, RainError, Unreachable
from rain.repository import embedded, embedded_disk
from rain.repository.accounts import Accounts
from rain.repository.base import Progress, Repository
from rain.repository.models import Image, ImageMeta, Role, User
from rain.repository.store import Store, ensure_indexes

T = TypeVar("T")

# The embedded server behind each client open_database made, so a failure can be explained by its disk.
_EMBEDDED: dict[int, embedded.EmbeddedStatus] = {}


def _where(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or uri
    except ValueError:
        return "the configured MongoDB"


def open_database(settings: Settings) -> pymongo.database.Database:
    """A pymongo Database, checked to answer, with Rain's indexes in place."""
    server = None if settings.mongo_uri else embedded.ensure_running(settings.data_path)
    uri = str(server.uri) if server else str(settings.mongo_uri)
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            # connectTimeoutMS also bounds the monitor's heartbeat, and a heartbeat that times out cancels every
            # operation in flight: the embedded server, busy with a large write, can take more than 5 s to answer
            uri, serverSelectionTimeoutMS=int(settings.timeout * 1000), connectTimeoutMS=20_000,
            socketTimeoutMS=int(settings.db_timeout * 1000), appname="rain", tz_aware=True)
        client.admin.command("ping")
    except (InvalidURI, ConfigurationError) as e:
        raise ConfigError(f"bad RAIN_MONGO_URI: {e}", hint="use mongodb://host:port/ or mongodb+srv://...") from e
    except PyMongoError as e:
        if server is not None:  # even logging in reads its storage: a full disk fails it
            raise embedded_disk.explain_failure(server.data_dir, server.log, server.log_offset,
                                                one_line_reason(e)) from e
        raise Unreachable(f"cannot reach MongoDB at {_where(uri)}: {type(e).__name__}",
                          hint="check RAIN_MONGO_URI and that the server is up, or unset it to use "
                               "the embedded repository") from e
    db = client[settings.mongo_db]
    if server is None:
        ensure_indexes(db)
        return db
    _EMBEDDED[id(client)] = server
    try:
        _read_one(db)  # ping answers even when its storage has failed; a read does not
        ensure_indexes(db)
    except PyMongoError as e:
        raise explain(db, e) from e
    return db


def explain(db: pymongo.database.Database, e: PyMongoError) -> RainError:
    """A database failure as the one-line error a user can act on: a full disk says so."""
    what = one_line_reason(e)
    server = _EMBEDDED.get(id(db.client))
    if server is None:
        return Unreachable(f"the repository database failed: {what}",
                           hint="try again; tell the operator if it persists")
    return embedded_disk.explain_failure(server.data_dir, server.log, server.log_offset, what)


def one_line_reason(e: PyMongoError) -> str:
    details = getattr(e, "details", None) or {}
    return f"{type(e).__name__}: {details.get('errmsg') or str(e).splitlines()[0][:200]}"


def _read_one(db: pymongo.database.Database) -> None:
    """A read from storage that costs the same on any catalog: a lookup of one _id. (The embedded
    server fetches every match before it limits: `find_one({})` read all 100,000 records, 22 s.)"""
    db.images.find_one({"_id": "probe"}, {"_id": 1})


def _probe(db: pymongo.database.Database) -> PyMongoError | None:
    """Read and write something small. `ping` alone is not enough: a server whose storage failed
    (a full disk) still answers it."""
    try:
        _read_one(db)
        db.health.update_one({"_id": "probe"}, {"$set": {"at": datetime.now(UTC)}}, upsert=True)
    except PyMongoError as e:
        return e
    return None


def health_problem(db: pymongo.database.Database) -> str | None:
    """None if the database reads and writes and has room to; else why not."""
    failure = _probe(db)
    if failure is not None:
        return explain(db, failure).one_line()
    server = _EMBEDDED.get(id(db.client))
    free = embedded_disk.free_bytes(server.data_dir) if server is not None else None
    if server is not None and free is not None and free < embedded_disk.RESERVE:  # unknown is not full
        return embedded_disk.disk_full(server.data_dir).one_line()
    return None


def embedded_health(settings: Settings) -> tuple[embedded.EmbeddedStatus, str]:
    """The embedded server's status and its state (ok, disk full, ...), without starting it."""
    st = embedded.status(settings.data_path)
    if not st.running:
        return st, "stopped"
    client: pymongo.MongoClient = pymongo.MongoClient(st.uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                                                      socketTimeoutMS=int(settings.db_timeout * 1000))
    with client:
        failure = _probe(client[settings.mongo_db])
    return st, embedded_disk.state(st.data_dir, st.log, st.log_offset,
                                   one_line_reason(failure) if failure else None)


def check_health(db: pymongo.database.Database) -> None:
    """Raise Unreachable (HTTP 503) with the reason when the database cannot read or write."""
    problem = health_problem(db)
    if problem is not None:
        raise Unreachable(f"the repository database cannot serve: {problem}")


class EmbeddedStore(Store):
    """A Store on Rain's own embedded database, whose disk Rain must not let fill up: a full disk stops
    it answering at all, and then not even a failed upload can be undone until it is restarted."""

    def __init__(self, db: pymongo.database.Database, user: str, upload_grace: int,
                 server: embedded.EmbeddedStatus, known: User | None = None) -> None:
        super().__init__(db, user, upload_grace=upload_grace, known=known)
        self.server = server

    def begin_upload(self, meta: ImageMeta, size: int) -> str:
        embedded_disk.require_room(self.server.data_dir, size)
        return self._explained(super().begin_upload, meta, size)

    def finish_upload(self, upload_id: str, src: BinaryIO, sha256: str | None = None,
                      progress: Progress | None = None) -> Image:
        return self._explained(super().finish_upload, upload_id, src, sha256, progress)

    def _explained(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return call(*args)
        except PyMongoError as e:
            raise explain(self.db, e) from e


def open_store(settings: Settings, actor: str | None = None) -> Store:
    """Direct MongoDB access. Whoever can reach the database is trusted as `settings.user`;
    that user is created on first use (the very first user of a repository becomes its admin)."""
    db = open_database(settings)
    name = actor or settings.user
    accounts = Accounts(db)
    if not accounts.exists(name):
        role = Role.ADMIN if accounts.is_empty() else Role.USER
        try:
            accounts.add(name, role, settings.default_quota)
        except Conflict:
            pass  # another process made it meanwhile
    store = store_for(db, name, settings.upload_grace)
    if isinstance(store, EmbeddedStore) and store.server.started:
        store.collect_stale_uploads()  # a restart (after a full disk, a crash) may have left unfinished uploads
    return store


def store_for(db: pymongo.database.Database, user: str, upload_grace: int, known: User | None = None) -> Store:
    """The Store acting as `user` on `db`: on Rain's embedded database, one that keeps its disk from filling
    (the CLI in direct mode and the service alike). `known`: the user's record, if just read."""
    server = _EMBEDDED.get(id(db.client))
    if server is None:
        return Store(db, user, upload_grace=upload_grace, known=known)
    return EmbeddedStore(db, user, upload_grace, server, known)


def open_repository(settings: Settings) -> Repository:
    if settings.repo_url:
        from rain.repository.client import Client

        return Client(settings.repo_url, settings.token, timeout=settings.timeout)
    return open_store(settings)
