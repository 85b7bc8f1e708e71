"""kill -9 of `fg-image upload` part-way: nothing half-stored stays visible, and the bytes come back."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time

import pytest
from support.cli import FG_IMAGE, json_out
from support.service import start_service

from rain.repository.connect import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
MiB = 1 << 20
SIZE = 300 * MiB


def written_files(db, upload_id: str) -> list:
    """The GridFS files an upload announced in its holds (chunks it was writing or wrote)."""
    return [fid for hold in db.holds.find({"holder": upload_id}) for fid in hold["files"]]


def kill_when_bytes_land(proc: subprocess.Popen, db, timeout: float = 120) -> dict:
    """SIGKILL `proc` as soon as some of its upload's chunks are in GridFS; return the uploading record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the upload ended before it could be killed: {proc.communicate()}"
        doc = db.images.find_one({"status": "uploading"})
        if doc and db["fs.chunks"].count_documents({"files_id": {"$in": written_files(db, doc["_id"])}}, limit=1):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return doc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no bytes of the upload reached GridFS in time")


def upload_in_background(path, env) -> subprocess.Popen:
    return subprocess.Popen([str(FG_IMAGE), "upload", str(path), "--name", "killed"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_nothing_left(db, fg, env=None) -> None:
    """No byte, chunk record, hold or record of the killed upload: only what the finished images hold."""
    held = {sha for blob in db.blobs.find() for sha in blob["chunks"]}
    assert {c["_id"] for c in db.chunks.find()} == held
    assert db["fs.files"].count_documents({}) == len(held)
    assert db["fs.chunks"].count_documents({}) == len(held)  # one GridFS chunk per content chunk
    assert db.holds.count_documents({}) == 0
    assert all(c["refs"] == 1 for c in db.chunks.find())
    assert db.images.count_documents({"status": "uploading"}) == 0
    available = list(db.images.find({"status": "available"}))
    assert db.users.find_one({"_id": "admin"})["used_bytes"] == sum(d["size"] for d in available)
    listed = json_out(fg("list", "--json", env=env))
    assert "killed" not in [i["name"] for i in listed]


@pytest.mark.parametrize("collect", ["repo gc", "next upload"])
def test_killed_local_upload_is_collected(collect, fg, rain_env, db, make_file):
    assert fg("users", "list").returncode == 0  # makes admin the repository's first user
    big = make_file(SIZE, "big.raw")
    doc = kill_when_bytes_land(upload_in_background(big, rain_env), db)

    assert db["fs.chunks"].count_documents({"files_id": {"$in": written_files(db, doc["_id"])}}) > 0
    assert db.users.find_one({"_id": "admin"})["used_bytes"] == SIZE  # still reserved
    assert json_out(fg("list", "--json")) == []  # but never visible

    if collect == "repo gc":
        result = fg("repo", "gc", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["uploads_removed"] == 1 and report["bytes_freed"] > 0
    else:
        small = make_file(1000, "small.raw")
        result = fg("upload", str(small))
        assert result.returncode == 0, result.stderr
        assert [i["name"] for i in json_out(fg("list", "--json"))] == ["small"]
    assert_nothing_left(db, fg)


def test_killed_delta_upload_is_collected_after_its_grace_and_uploads_again(fg, rain_env, settings, db, make_file,
                                                                              tmp_path):
    """A delta upload is many requests: the service cannot see a dead client, only an upload that stopped
    asking. Once its heartbeat is older than upload_grace it is collected, and the upload run again works."""
    svc = start_service({**rain_env, "RAIN_UPLOAD_GRACE": "2"}, tmp_path / "serve.log")
    try:
        remote = {"RAIN_REPO_URL": svc.url, "RAIN_TOKEN": open_store(settings, "admin").issue_token("admin")}
        big = make_file(SIZE, "big.raw")
        kill_when_bytes_land(upload_in_background(big, {**rain_env, **remote}), db)
        assert json_out(fg("list", "--json", env=remote)) == []  # never visible

        time.sleep(3)
        result = fg("repo", "gc", "--json", env=remote)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["uploads_removed"] == 1
        assert_nothing_left(db, fg, env=remote)

        again = fg("upload", str(big), "--name", "again", "--json", env=remote)
        assert again.returncode == 0, again.stderr
        image = json.loads(again.stdout)
        assert image["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
        assert_nothing_left(db, fg, env=remote)
    finally:
        svc.stop()
