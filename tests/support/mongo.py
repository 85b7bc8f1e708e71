"""The tests' own pymongo clients, bounded like Rain's: a database server that hangs is a failed test,
not a run that waits forever (pytest-timeout's SIGALRM may land on pymongo's monitor thread and leave
the main thread blocked in recv)."""

from __future__ import annotations

from typing import Any

import pymongo


def mongo_client(uri: str, **options: Any) -> pymongo.MongoClient:
    return pymongo.MongoClient(uri, **{"serverSelectionTimeoutMS": 10_000, "socketTimeoutMS": 120_000, **options})
