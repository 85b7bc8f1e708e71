"""The embedded repository database: a SecantusDB MongoDB-wire server in its own process.

With no RAIN_MONGO_URI, Rain starts `secantusd-py` (installed beside Rain, never
imported: it is GPL-2.0-only) on a free loopback port with its data under
Rain's data directory, records pid and port in a state file, and later
invocations reuse it. Rain talks to it with pymongo, as to any MongoDB.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rain.errors import ToolMissing, Unreachable
from rain.process import pid_alive

SERVER = "secantusd-py"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    log: Path

    @property
    def uri(self) -> str | None:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true" if self.port else None


def _home(data_dir: Path) -> Path:
    return data_dir / "mongo"


def _state_file(data_dir: Path) -> Path:
    return _home(data_dir) / "server.json"


def _server_binary() -> str:
    beside = Path(sys.executable).parent / SERVER
    if beside.exists():
        return str(beside)
    found = shutil.which(SERVER)
    if not found:
        raise ToolMissing(f"the embedded repository server {SERVER!r} is not installed",
                          hint="run scripts/setup.sh, or set RAIN_MONGO_URI to an existing MongoDB")
    return found


def _answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(data_dir: Path) -> EmbeddedStatus:
    home = _home(data_dir)
    log = home / "server.log"
    try:
        state = json.loads(_state_file(data_dir).read_text())
        pid, port = int(state["pid"]), int(state["port"])
    except (OSError, ValueError, KeyError):
        return EmbeddedStatus(False, None, None, home / "data", log)
    running = pid_alive(pid) and _answers(port)
    return EmbeddedStatus(running, pid if running else None, port if running else None, home / "data", log)


def ensure_running(data_dir: Path) -> EmbeddedStatus:
    """Start the server unless one is already serving this data directory."""
    home = _home(data_dir)
    home.mkdir(parents=True, exist_ok=True)
    current = status(data_dir)
    if current.running:
        return current
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = status(data_dir)  # someone may have started it while we waited
        if current.running:
            return current
        port = _free_port()
        log = open(current.log, "ab")
        argv = [_server_binary(), "--host", "127.0.0.1", "--port", str(port),
                "--storage-path", str(current.data_dir), "--standalone", "--log-level", "WARNING",
                "--cache-size", "256M"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=home)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unreachable(f"the embedded repository server exited with code {proc.returncode}",
                                  hint=f"see {current.log}")
            if _answers(port, 0.2):
                _state_file(data_dir).write_text(json.dumps({"pid": proc.pid, "port": port}))
                return status(data_dir)
            time.sleep(0.1)
        proc.kill()
        raise Unreachable("the embedded repository server did not start within "
                          f"{START_TIMEOUT:.0f}s", hint=f"see {current.log}")


def stop(data_dir: Path, timeout: float = 20.0) -> bool:
    """Stop the server; True if one was running."""
    current = status(data_dir)
    if not current.running or current.pid is None:
        _state_file(data_dir).unlink(missing_ok=True)
        return False
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    nudge = time.monotonic() + 1.0
    while pid_alive(current.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
        # Its first act on SIGTERM is to close the listening socket. Still listening means the
        # signal landed on one of its threads while the main one waits and never runs the handler
        # (about one stop in three): signal again rather than wait for SIGKILL.
        if time.monotonic() > nudge and current.port and _answers(current.port, 0.2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(current.pid, signal.SIGTERM)
            nudge = time.monotonic() + 1.0
    if pid_alive(current.pid):
        os.kill(current.pid, signal.SIGKILL)
    _state_file(data_dir).unlink(missing_ok=True)
    return True
