"""Open the repository this invocation should use: a remote service, or MongoDB directly."""

from __future__ import annotations

from urllib.parse import urlsplit

import pymongo
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

from rain.config import Settings
from rain.errors import ConfigError, Conflict, Unreachable
from rain.repository import embedded
from rain.repository.accounts import Accounts
from rain.repository.base import Repository
from rain.repository.models import Role
from rain.repository.store import Store, ensure_indexes


def mongo_uri(settings: Settings) -> str:
    if settings.mongo_uri:
        return str(settings.mongo_uri)
    return str(embedded.ensure_running(settings.data_path).uri)


def _where(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or uri
    except ValueError:
        return "the configured MongoDB"


def open_database(settings: Settings) -> pymongo.database.Database:
    """A pymongo Database, checked to answer, with Rain's indexes in place."""
    uri = mongo_uri(settings)
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(settings.timeout * 1000), connectTimeoutMS=5000,
            appname="rain", tz_aware=True)
        client.admin.command("ping")
    except (InvalidURI, ConfigurationError) as e:
        raise ConfigError(f"bad RAIN_MONGO_URI: {e}", hint="use mongodb://host:port/ or mongodb+srv://...") from e
    except PyMongoError as e:
        raise Unreachable(f"cannot reach MongoDB at {_where(uri)}: {type(e).__name__}",
                          hint="check RAIN_MONGO_URI and that the server is up, or unset it to use "
                               "the embedded repository") from e
    db = client[settings.mongo_db]
    ensure_indexes(db)
    return db


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
    return Store(db, name, upload_grace=settings.upload_grace)


def open_repository(settings: Settings) -> Repository:
    if settings.repo_url:
        from rain.repository.client import Client

        return Client(settings.repo_url, settings.token, timeout=settings.timeout)
    return open_store(settings)
