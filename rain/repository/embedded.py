"""The embedded repository database: a SecantusDB MongoDB-wire server in its own process.

With no RAIN_MONGO_URI, Rain starts `secantusd-py` (installed beside Rain, never
imported: it is GPL-2.0-only) on a free loopback port with its data under
Rain's data directory, records pid and port in a state file, and later
invocations reuse it. Rain talks to it with pymongo, as to any MongoDB.

The port is reachable by every local user, so the server runs with `--auth`
and a credential only its owner can read (see embedded_access); a server
started by an older Rain without it is restarted with it.
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
from dataclasses import dataclass
from pathlib import Path

from rain.errors import ConfigError, ToolMissing, Unreachable
from rain.host.tools import pid_alive
from rain.repository import embedded_access as access
from rain.waiting import Deadline, poll

SERVER = "secantusd-py"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    log: Path
    credential: access.Credential | None = None
    log_offset: int = 0  # where the running server's lines start in `log`
    started: bool = False  # this call started it

    @property
    def uri(self) -> str | None:
        """The URI to connect with, credential included: never print it (see shown_uri)."""
        if not self.port:
            return None
        auth = self.credential.userinfo() if self.credential else ""
        return f"mongodb://{auth}127.0.0.1:{self.port}/?directConnection=true&authSource=admin"

    @property
    def shown_uri(self) -> str | None:
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


def _read_state(data_dir: Path) -> dict | None:
    try:
        state = json.loads(_state_file(data_dir).read_text())
        state["pid"], state["port"] = int(state["pid"]), int(state["port"])
        return dict(state)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def status(data_dir: Path) -> EmbeddedStatus:
    home = _home(data_dir)
    log = home / "server.log"
    state = _read_state(data_dir)
    if state is None:
        return EmbeddedStatus(False, None, None, home / "data", log)
    pid, port = state["pid"], state["port"]
    running = pid_alive(pid) and _answers(port)
    if not running:
        return EmbeddedStatus(False, None, None, home / "data", log)
    cred = access.load_credential(home) if state.get("auth") else None
    return EmbeddedStatus(True, pid, port, home / "data", log, cred, int(state.get("log_offset", 0)))


def _spawn(current: EmbeddedStatus, auth: bool) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port and wait until it listens; only its owner can read what it writes."""
    port = _free_port()
    # An explicit (empty) config file: no ./, ~/.secantus/ or /etc/secantus/ secantusd.toml changes this server.
    config = current.data_dir.parent / "secantusd.toml"
    if not config.exists():
        access.write_private(config, "# Rain starts this server with flags only; see rain/repository/embedded.py\n")
    log = os.open(current.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, access.PRIVATE_FILE)
    argv = [_server_binary(), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(current.data_dir), "--standalone", "--log-level", "WARNING",
            "--cache-size", "256M", *(["--auth"] if auth else [])]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=current.data_dir.parent, umask=0o077)
    finally:
        os.close(log)

    def up() -> bool:
        if proc.poll() is not None:
            raise Unreachable(f"the embedded repository server exited with code {proc.returncode}",
                              hint=f"see {current.log}")
        return _answers(port, 0.2)

    if poll(up, Deadline.after(START_TIMEOUT), 0.1):
        return proc, port
    proc.kill()
    raise Unreachable(f"the embedded repository server did not start within {START_TIMEOUT:.0f}s",
                      hint=f"see {current.log}")


def _provision(current: EmbeddedStatus) -> access.Credential:
    """First start with auth: create Rain's user on a run without --auth, then save its credential."""
    cred = access.new_credential()
    proc, port = _spawn(current, auth=False)
    try:
        access.create_admin(port, cred)
    finally:
        _terminate(proc.pid, port, 20.0)
        proc.wait()
    access.save_credential(current.data_dir.parent, cred)
    return cred


def ensure_running(data_dir: Path) -> EmbeddedStatus:
    """Start the server unless one is already serving this data directory with auth."""
    home = _home(data_dir)
    try:
        home.mkdir(mode=access.PRIVATE_DIR, parents=True, exist_ok=True)
        current = status(data_dir)
        if current.running and current.credential:
            return current
        lock_fd = os.open(home / "lock", os.O_WRONLY | os.O_CREAT, access.PRIVATE_FILE)
    except PermissionError as e:
        raise ConfigError(f"cannot use the embedded repository in {home}: it is not yours",
                          hint="set RAIN_DATA_DIR to a directory of your own, or RAIN_REPO_URL to a shared "
                               "repository service") from e
    with os.fdopen(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = status(data_dir)  # someone may have started it while we waited
        if current.running and current.credential:
            return current
        if current.running:  # an older Rain's server, open to anyone: restart it with auth
            stop(data_dir)
            current = status(data_dir)
        access.tighten(home)
        fresh = not current.data_dir.exists() or not any(current.data_dir.iterdir())
        cred = access.load_credential(home) or _provision(current)
        offset = current.log.stat().st_size if current.log.exists() else 0
        proc, port = _spawn(current, auth=True)
        try:
            access.evict_strangers(port, cred, fresh)
        except BaseException:
            _terminate(proc.pid, port, 5.0)
            raise
        access.write_private(_state_file(data_dir), json.dumps(
            {"pid": proc.pid, "port": port, "auth": True, "log_offset": offset}))
        return EmbeddedStatus(True, proc.pid, port, current.data_dir, current.log, cred, offset, started=True)


def _terminate(pid: int, port: int | None, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    nudge = Deadline.after(1.0)

    def gone() -> bool:
        nonlocal nudge
        if not pid_alive(pid):
            return True
        # Its first act on SIGTERM is to close the listening socket. Still listening means the
        # signal landed on one of its threads while the main one waits and never runs the handler
        # (about one stop in three): signal again rather than wait for SIGKILL.
        if nudge.passed and port and _answers(port, 0.2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            nudge = Deadline.after(1.0)
        return False

    if not poll(gone, Deadline.after(timeout), 0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(data_dir: Path, timeout: float = 20.0) -> bool:
    """Stop the server; True if one was running."""
    current = status(data_dir)
    if not current.running or current.pid is None:
        _state_file(data_dir).unlink(missing_ok=True)
        return False
    _terminate(current.pid, current.port, timeout)
    _state_file(data_dir).unlink(missing_ok=True)
    return True
