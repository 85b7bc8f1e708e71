"""The embedded database on a disk that fills up, for real: a small tmpfs holds its data directory.

When WiredTiger hits ENOSPC it panics and SecantusDB then fails every request
but `ping`, reads included, until it is restarted with room to replay its
journal. Rain must refuse uploads that would fill the disk, name the full disk
in one line when it has filled anyway, answer 503 on /healthz, and after
`free space; fg-image repo stop` come back with nothing half-stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.cli import FG_IMAGE
from support.mongo import mongo_client
from support.service import start_service

from rain.repository import embedded

pytestmark = pytest.mark.integration

MiB = 1024 * 1024

# Uploads through the real Store in its own process (so the upload's process is gone afterwards, as after a
# crash), from a source that fills the disk after its first read: the upload passes Rain's free-space check and
# then hits ENOSPC part-way, as when something else fills the disk meanwhile.
UPLOAD_THAT_FILLS_THE_DISK = r"""
import os, sys
from rain.config import load_settings
from rain.errors import RainError
from rain.repository.connect import open_store
from rain.repository.models import ImageMeta

ballast, size = sys.argv[1], int(sys.argv[2])

class FillsTheDisk:
    def __init__(self):
        self.filled = False

    def read(self, n):
        if not self.filled:
            self.filled = True
            fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * (1 << 20))
            except OSError:
                pass
            finally:
                os.close(fd)
        return os.urandom(n)

try:
    open_store(load_settings()).put(FillsTheDisk(), ImageMeta(name="doomed"), size)
except RainError as e:
    print(e.one_line())
    sys.exit(int(e.exit_code))
except Exception as e:
    print(f"unexplained {type(e).__name__}: {e}")
    sys.exit(1)
print("stored")
"""


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 192 MiB tmpfs, unmounted (with whatever server used it stopped) afterwards."""
    mount = Path(tempfile.mkdtemp(prefix="rain-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        embedded.stop(mount / "rain", timeout=5)
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def env(small_disk: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_DATA_DIR": str(small_disk / "rain"), "RAIN_CONFIG": str(small_disk / "absent.toml"),
                "RAIN_USER": "admin", "NO_COLOR": "1"})
    return env


def fg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FG_IMAGE), *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def stored(data_dir: Path) -> dict[str, int]:
    """What the repository holds, read with the embedded server's own credential."""
    status = embedded.status(data_dir)
    with mongo_client(status.uri) as client:
        db = client.rain
        return {"images": db.images.count_documents({}), "chunks": db["fs.chunks"].count_documents({}),
                "files": db["fs.files"].count_documents({})}


def fill(path: Path, leave: int) -> None:
    """Write a ballast file until only about `leave` bytes are free on its file system."""
    free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
    with open(path, "wb") as f:
        f.truncate(0)
        for _ in range(max(0, free - leave) // MiB):
            f.write(b"\0" * MiB)


def test_an_upload_the_disk_cannot_take_is_refused_before_any_byte_is_stored(small_disk, env, tmp_path):
    data_dir = small_disk / "rain"
    assert fg(env, "list").returncode == 0  # starts the embedded server on the small disk
    fill(small_disk / "ballast", leave=90 * MiB)
    image = tmp_path / "big.raw"
    image.write_bytes(os.urandom(20 * MiB))  # fits in 90 MiB, but not with the database's own needs

    result = fg(env, "upload", str(image))

    assert result.returncode == 13, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "not enough disk space" in lines[0] and "free space" in lines[0], result.stderr
    assert stored(data_dir) == {"images": 0, "chunks": 0, "files": 0}
    status = json.loads(fg(env, "repo", "status", "--json").stdout)
    assert status["state"] == "ok" and 0 < status["free"] < 100 * MiB


def test_a_disk_that_fills_during_an_upload_is_named_and_recovers_with_nothing_half_stored(small_disk, env,
                                                                                          tmp_path):
    data_dir = small_disk / "rain"
    assert fg(env, "list").returncode == 0
    service = start_service(env, tmp_path / "serve.log")
    url = service.url
    try:
        failed = subprocess.run([sys.executable, "-c", UPLOAD_THAT_FILLS_THE_DISK, str(small_disk / "ballast"),
                                 str(24 * MiB)], env=env, capture_output=True, text=True, timeout=120)

        assert failed.returncode == 13, failed.stdout + failed.stderr
        assert "disk is full" in failed.stdout and "fg-image repo stop" in failed.stdout, failed.stdout
        listed = fg(env, "list")
        status = json.loads(fg(env, "repo", "status", "--json").stdout)
        health = requests.get(url + "/healthz", timeout=30)
        if listed.returncode == 0:  # the server refused the writes and kept serving: nothing half stored shows
            assert "no images" in listed.stdout and status["state"] == "low on disk space", (listed, status)
        else:  # WiredTiger hit the full disk in its own files: every request fails; say why, in one line
            assert listed.returncode == 13 and len(listed.stderr.splitlines()) == 1, listed.stderr
            assert "disk is full" in listed.stderr and "free space" in listed.stderr
            assert status["state"] == "disk full" and "repo stop" in status["hint"]
            assert health.status_code == 503 and "disk is full" in health.json()["message"]
    finally:
        service.stop()

    (small_disk / "ballast").unlink()  # the recovery: free space, restart
    assert "stopped" in fg(env, "repo", "stop").stdout
    relisted = fg(env, "list", "--json")

    assert relisted.returncode == 0, relisted.stderr
    assert json.loads(relisted.stdout) == []
    assert stored(data_dir) == {"images": 0, "chunks": 0, "files": 0}  # no half image, no orphan chunks
    assert json.loads(fg(env, "repo", "status", "--json").stdout)["state"] == "ok"
