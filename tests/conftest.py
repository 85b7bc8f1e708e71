"""Fixtures every test tree may use: real services on 127.0.0.1, never mocks.

- `embedded_mongo` (session): ONE embedded SecantusDB server started the way Rain
  starts it (rain.repository.embedded.ensure_running) in a temporary data dir,
  stopped when the session ends. It runs with --auth: its `.uri` carries the
  generated credential, so use that (never a bare host:port) to connect.
- `rain_env`: the environment a test's Rain runs in: its own data dir, an absent
  config file, and a fresh database on the session server (RAIN_MONGO_DB), so
  tests are isolated without starting a server each.
- `settings`: the Settings that environment gives.
- `fg`: run the real `fg-image` console script in that environment.
- `service`: the real `fg-image serve` on a free port, over the test's database.
- `browser` (session), `page`, `context`, `new_page`: Debian's chromium driven by Playwright
  (support/browser.py). Defined here, once: a session fixture imported by two conftests is two
  fixtures, and a second Playwright started in the same session fails.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import browser, context, new_page, page  # noqa: F401  (one chromium per session)
from support.cli import FG_IMAGE
from support.mongo import mongo_client
from support.service import Service, start_service

from rain.config import Settings, load_settings
from rain.repository import embedded

# A shell without job control starts background jobs with SIGINT ignored (POSIX), and Python keeps that, as
# would every fg-image a test starts and then stops with Ctrl-C. scripts/test.sh runs pytest so: give it
# (and so its children) Ctrl-C back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# scripts/test.sh asks a run that outlives its budget for every thread's stack (SIGUSR1) before it stops it.
_STACKS = open(os.environ["TEST_STACKS_FILE"], "a") if os.environ.get("TEST_STACKS_FILE") else None  # noqa: SIM115
if _STACKS is not None:
    faulthandler.register(signal.SIGUSR1, file=_STACKS, all_threads=True)


@pytest.fixture(scope="session")
def embedded_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.EmbeddedStatus]:
    data_dir = tmp_path_factory.mktemp("embedded-mongo")
    status = embedded.ensure_running(data_dir)
    assert status.running, f"the embedded server did not start; see {status.log}"
    yield status
    embedded.stop(data_dir, timeout=5)  # the data goes with the temp dir; no need to wait long


@pytest.fixture
def rain_env(tmp_path: Path, embedded_mongo: embedded.EmbeddedStatus) -> Iterator[dict[str, str]]:
    """os.environ without RAIN_* settings, plus this test's data dir and fresh database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    db_name = "t_" + uuid.uuid4().hex[:16]
    env.update({
        "RAIN_DATA_DIR": str(tmp_path / "rain-data"),
        "RAIN_CONFIG": str(tmp_path / "absent-config.toml"),
        "RAIN_MONGO_URI": str(embedded_mongo.uri),
        "RAIN_MONGO_DB": db_name,
        "RAIN_USER": "admin",
        "NO_COLOR": "1",
    })
    yield env
    with mongo_client(embedded_mongo.uri) as client:
        client.drop_database(db_name)


@pytest.fixture
def settings(rain_env: dict[str, str]) -> Settings:
    return load_settings(environ=rain_env)


@pytest.fixture
def fg(rain_env: dict[str, str]):
    """fg(*args, env={...}, cwd=..., timeout=...) → CompletedProcess of the real `fg-image`."""
    assert FG_IMAGE.exists(), f"{FG_IMAGE} is missing: run scripts/setup.sh"

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FG_IMAGE), *args], env={**rain_env, **(env or {})}, cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def service(rain_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    svc = start_service(rain_env, tmp_path / "serve.log")
    yield svc
    svc.stop()
