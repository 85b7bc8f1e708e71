"""The embedded database is closed to other local users: a credential for the port, 0700/0600 for the files.

Each test starts its own embedded server in a data directory other users can
reach the way ~/.local/share/rain usually is (0755 parents), and probes it as a
throwaway system user: connecting without the credential must be refused for
reads and writes, and the data directory must not be readable.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.mongo import mongo_client

from rain.repository import embedded

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
SITE = next(p for p in sys.path if p.endswith("site-packages"))
# The venv's interpreter lives under /root (0700); the stranger runs the system one with the venv's pymongo.
STRANGER_PYTHON = shutil.which("python3.11", path="/usr/bin:/bin") or "/usr/bin/python3"

PROBE = r"""
import json, os, sys
import pymongo
port, data = int(sys.argv[1]), sys.argv[2]
out = {}
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000)
for name, op in [("write", lambda: client.rain.stolen.insert_one({"x": 1})),
                 ("read", lambda: client.rain.images.find_one()),
                 ("list", lambda: client.list_database_names())]:
    try:
        op()
        out[name] = "allowed"
    except pymongo.errors.OperationFailure as e:
        out[name] = "refused" if e.code == 13 else f"failed {e.code}"
for name, path in [("data dir", data), ("home", os.path.dirname(data))]:
    try:
        os.listdir(path)
        out[name] = "readable"
    except PermissionError:
        out[name] = "denied"
for name, path in [("credential", os.path.join(os.path.dirname(data), "credential.json")),
                   ("turtle", os.path.join(data, "WiredTiger.turtle"))]:
    try:
        open(path, "rb").read(1)
        out[name] = "readable"
    except PermissionError:
        out[name] = "denied"
    except FileNotFoundError:
        out[name] = "missing"
print(json.dumps(out))
"""


@pytest.fixture
def stranger() -> Iterator[pwd.struct_passwd]:
    """A throwaway local user with no business in Rain's data."""
    name = "rainx" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may traverse, as a home directory's ~/.local/share usually is."""
    path = Path(tempfile.mkdtemp(prefix="rain-auth-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        embedded.stop(path / "rain", timeout=5)
        shutil.rmtree(path, ignore_errors=True)


def probe_as(user: pwd.struct_passwd, port: int, data: Path) -> dict[str, str]:
    result = subprocess.run([STRANGER_PYTHON, "-c", PROBE, str(port), str(data)], user=user.pw_uid,
                            group=user.pw_gid, extra_groups=[], env={"PYTHONPATH": SITE, "HOME": "/"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def fg_image(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_DATA_DIR": str(data_dir), "RAIN_CONFIG": str(data_dir / "absent.toml"), "NO_COLOR": "1"})
    return subprocess.run([str(BIN / "fg-image"), *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def world_readable(home: Path) -> list[str]:
    return [str(p) for p in [home, *home.rglob("*")] if p.lstat().st_mode & 0o077 and not p.is_symlink()]


def test_another_local_user_can_neither_query_the_embedded_database_nor_read_its_files(shared_dir, stranger):
    data_dir = shared_dir / "rain"
    data_dir.mkdir(mode=0o755)
    status = embedded.ensure_running(data_dir)
    with mongo_client(status.uri) as owner:
        owner.rain.images.insert_one({"_id": "secret", "name": "owner's image"})

    seen = probe_as(stranger, int(status.port or 0), status.data_dir)

    assert seen == {"write": "refused", "read": "refused", "list": "refused", "data dir": "denied",
                    "home": "denied", "credential": "denied", "turtle": "denied"}
    home = status.data_dir.parent
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "credential.json").stat().st_mode) == 0o600
    assert world_readable(home) == []
    with mongo_client(status.uri) as owner:
        assert owner.rain.stolen.count_documents({}) == 0  # the refused write left nothing


def start_legacy_server(data_dir: Path) -> tuple[int, int]:
    """What Rain did before auth: no --auth, state without it, files with the default umask (0755/0644)."""
    home = data_dir / "mongo"
    home.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    old = os.umask(0o022)
    try:
        with open(home / "server.log", "ab") as log:
            proc = subprocess.Popen([str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
                                     "--storage-path", str(home / "data"), "--standalone", "--log-level", "WARNING",
                                     "--cache-size", "256M"], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        (home / "server.json").write_text(json.dumps({"pid": proc.pid, "port": port}))
    finally:
        os.umask(old)
    return proc.pid, port


def test_a_data_dir_from_before_auth_keeps_its_images_and_is_closed_on_the_next_command(shared_dir, stranger):
    data_dir = shared_dir / "rain"
    data_dir.mkdir(mode=0o755)
    old_pid, old_port = start_legacy_server(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_MONGO_URI": f"mongodb://127.0.0.1:{old_port}/?directConnection=true",
                "RAIN_CONFIG": str(shared_dir / "absent.toml"), "RAIN_DATA_DIR": str(data_dir), "NO_COLOR": "1"})
    image = shared_dir / "old.raw"
    image.write_bytes(os.urandom(64 * 1024))
    uploaded = subprocess.run([str(BIN / "fg-image"), "upload", str(image)], env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert uploaded.returncode == 0, uploaded.stderr
    image_id = uploaded.stdout.strip()
    assert world_readable(data_dir / "mongo")  # the old layout: other users could read it

    listed = fg_image(data_dir, "list", "--json")

    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)] == [image_id]  # the upgrade kept the data
    status = embedded.status(data_dir)
    assert status.running and status.pid != old_pid
    assert world_readable(data_dir / "mongo") == []
    seen = probe_as(stranger, int(status.port or 0), status.data_dir)
    assert (seen["read"], seen["write"], seen["data dir"], seen["credential"]) == \
        ("refused", "refused", "denied", "denied")
    assert status.credential is not None
    shown = json.loads(fg_image(data_dir, "repo", "status", "--json").stdout)
    assert shown["auth"] is True and shown["state"] == "ok"
    assert status.credential.password not in json.dumps(shown)  # status never prints the credential
