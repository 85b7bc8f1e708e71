"""A database server that hangs in the middle of an operation: Rain gives up after RAIN_DB_TIMEOUT.

The server is really frozen (SIGSTOP): it keeps its TCP connections, so a client that
already talked to it waits for an answer that never comes. Without a socket timeout
pymongo waits forever, and so did a whole CI run once, when the embedded server wedged.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pymongo.errors import NetworkTimeout
from support.service import start_service

from rain.cli.failures import known_failure
from rain.config import Settings, load_settings
from rain.errors import Unreachable
from rain.repository import embedded
from rain.repository.connect import open_store

pytestmark = pytest.mark.integration

DB_TIMEOUT = 3


def freeze(pid: int) -> None:
    """SIGSTOP pid and wait until every thread of it has stopped: the signal is asynchronous, and a thread
    still running for a few microseconds would answer the next request (it did, once, under load)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"server {pid} did not stop")


@pytest.fixture
def frozen_site(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str], embedded.EmbeddedStatus]]:
    """A site on an embedded server of its own (SIGSTOP would freeze the session's for every test)."""
    data = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_DATA_DIR": str(data), "RAIN_CONFIG": str(tmp_path / "absent.toml"), "RAIN_USER": "admin",
                "RAIN_DB_TIMEOUT": str(DB_TIMEOUT), "NO_COLOR": "1"})
    server = embedded.ensure_running(data)
    assert server.running and server.pid
    try:
        yield load_settings(environ=env), env, server
    finally:
        os.kill(server.pid, signal.SIGCONT)
        embedded.stop(data, timeout=10)


def test_a_command_gets_a_one_line_error_once_the_server_stops_answering(frozen_site):
    settings, _, server = frozen_site
    store = open_store(settings, "admin")
    store.add_user("alice")  # the connection is open and has been answered
    assert server.pid
    freeze(server.pid)
    started = time.monotonic()
    with pytest.raises(NetworkTimeout) as caught:
        store.list_users()
    waited = time.monotonic() - started
    assert DB_TIMEOUT - 0.5 <= waited < DB_TIMEOUT + 15, f"gave up after {waited:.1f}s"
    failure = known_failure(caught.value)
    assert isinstance(failure, Unreachable)
    line = failure.one_line()
    assert "\n" not in line and "stopped answering" in line and "RAIN_DB_TIMEOUT" in line

    os.kill(server.pid, signal.SIGCONT)  # once it answers again, so does the same store
    assert "alice" in {u.name for u in store.list_users()}


def test_the_service_answers_503_while_the_server_hangs_and_serves_again_after(frozen_site, tmp_path):
    settings, env, server = frozen_site
    token = open_store(settings, "admin").issue_token("admin")
    service = start_service(env, tmp_path / "serve.log")
    try:
        headers = {"Authorization": f"Bearer {token}"}
        url = service.url + "/api/v1/images"
        assert requests.get(url, headers=headers, timeout=30).status_code == 200
        assert server.pid
        freeze(server.pid)
        hung = requests.get(url, headers=headers, timeout=60)  # never the client's timeout: the service's
        assert hung.status_code == 503, hung.text
        assert hung.json()["error"] == "unreachable"
        os.kill(server.pid, signal.SIGCONT)
        assert requests.get(url, headers=headers, timeout=30).status_code == 200
    finally:
        os.kill(server.pid, signal.SIGCONT)
        service.stop()
