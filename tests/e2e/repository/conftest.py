"""Fixtures for the fg-image end-to-end tests: image files on disk and a look into the database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pymongo.database import Database

from rain.config import Settings
from rain.repository.connect import open_database, open_store


@pytest.fixture
def make_file(tmp_path: Path):
    """make_file(size, name) → a file of `size` random bytes, written in 1 MiB pieces."""

    def make(size: int, name: str = "image.raw") -> Path:
        path = tmp_path / name
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n
        return path

    return make


@pytest.fixture
def db(settings: Settings) -> Database:
    return open_database(settings)


@pytest.fixture
def remote_env(settings: Settings, service) -> dict[str, str]:
    """Environment for an `fg-image` that talks to the running service as the admin."""
    token = open_store(settings, "admin").issue_token("admin")
    return {"RAIN_REPO_URL": service.url, "RAIN_TOKEN": token}
