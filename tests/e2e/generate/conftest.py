"""Real builds with the real `fg-image`, sharing one cache for the whole session.

`gen_data` is one Rain data dir for every generate test in the session, so the
bookworm base system is bootstrapped once and every later build starts from
it (that reuse is itself what several tests check). The repository is the
session's embedded MongoDB-wire server with a fresh database per test
(`rain_env` from tests/conftest.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# builder fixtures: the qemu builder image, the cloud SIMULATORS and the real Keystone + Glance Nova's uses
from support.builders import (  # noqa: F401
    opennebula_builders_file,
    opennebula_sim,
    openstack_builders_file,
    openstack_sim,
    qemu_bundle,
)
from support.openstack_cloud import openstack_cloud  # noqa: F401


@pytest.fixture(scope="session")
def gen_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generate-data")


@pytest.fixture
def gen(fg: Callable[..., subprocess.CompletedProcess[str]], gen_data: Path) -> Callable[..., Any]:
    """gen('generate', ...) runs fg-image with the shared build data dir."""
    def run(*args: str, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {"RAIN_DATA_DIR": str(gen_data), **kw.pop("env", {})}
        return fg(*args, env=env, timeout=timeout, **kw)
    return run

