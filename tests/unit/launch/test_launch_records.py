"""A launch record is stored where its owner can rewrite it: what it names on this host (processes, the
launch's directory, its console logs) is killed or removed only when the launch itself made and marked it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rain.launch import records
from rain.repository.models import Launch, LaunchedMachine


def _launch(work: Path | str, logs: Path | str = "", remote_id: str = "", launch_id: str = "0123456789ab") -> Launch:
    return Launch(id=launch_id, owner="alice", started=datetime.now(UTC), image="abcdefabcdef", target="qemu",
                  machines=[LaunchedMachine(name="node1", ssh_host="127.0.0.1", ssh_port=2222, remote_id=remote_id)],
                  detail={"work": str(work), "logs": str(logs)})


def _work(tmp_path: Path, launch_id: str = "0123456789ab", name: str = "rain-launch-abcd1234") -> Path:
    work = tmp_path / name
    work.mkdir()
    (work / "launch.json").write_text(json.dumps({"id": launch_id}))
    return work


def test_a_marked_launch_directory_and_its_logs_are_removed(tmp_path: Path) -> None:
    work = _work(tmp_path)
    root = tmp_path / "launch" / "logs"
    logs = root / "20261205-120000-abcd1234"
    logs.mkdir(parents=True)
    assert records.release(_launch(work, logs), root) == 0
    assert not work.exists() and not logs.exists() and root.is_dir()


@pytest.mark.parametrize("case", ["relative", "not-a-launch-name", "no-mark", "other-launch", "symlink"])
def test_a_directory_the_launch_did_not_make_and_mark_is_left_alone(tmp_path: Path, case: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    work: Path | str = {
        "relative": "rain-launch-abcd1234",
        "not-a-launch-name": victim,
        "no-mark": tmp_path / "rain-launch-nomark12",
        "other-launch": _work(tmp_path, launch_id="ffffffffffff"),
        "symlink": tmp_path / "rain-launch-symlink1",
    }[case]
    if case == "no-mark":
        Path(work).mkdir()
    if case == "symlink":
        (victim / "launch.json").write_text(json.dumps({"id": "0123456789ab"}))
        Path(work).symlink_to(victim)
    records.release(_launch(work), tmp_path / "launch" / "logs")
    assert (victim / "precious").read_text() == "keep me"
    if case in ("no-mark", "other-launch"):
        assert Path(work).is_dir(), "another launch's directory stays"


@pytest.mark.parametrize("logs", ["{root}/..", "{root}/../../victim", "{tmp}/victim",
                                  "{root}/20261205-120000-linkdir1"])
def test_logs_outside_the_launch_logs_directory_are_left_alone(tmp_path: Path, logs: str) -> None:
    root = tmp_path / "launch" / "logs"
    root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (root / "20261205-120000-linkdir1").symlink_to(victim)
    records.release(_launch(_work(tmp_path), logs.format(root=root, tmp=tmp_path)), root)
    assert (victim / "precious").read_text() == "keep me" and root.is_dir()


@pytest.mark.parametrize("remote_id", ["²", "0", "-1", "9" * 200, "12 13", ""])
def test_only_plain_pids_count(tmp_path: Path, remote_id: str) -> None:
    launch = _launch(_work(tmp_path), remote_id=remote_id)
    assert records.pids(launch) == []
    assert records.alive(launch) == 0
    records.release(launch, tmp_path)


def test_a_live_process_that_is_not_the_launchs_qemu_is_not_killed(tmp_path: Path) -> None:
    work = _work(tmp_path)
    # a process that even names a file under the launch's directory, but is not QEMU
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"file={work}/disk.qcow2"],
                             start_new_session=True)
    try:
        launch = _launch(work, remote_id=str(other.pid))
        time.sleep(0.2)
        assert other.poll() is None, "the stand-in is running"
        assert records.alive(launch) == 0
        assert records.release(launch, tmp_path) == 0
        assert other.poll() is None, "still running"
    finally:
        other.kill()
        other.wait()


def test_the_launch_key_is_written_for_its_owner_only(tmp_path: Path) -> None:
    from rain.host.ssh import KeyPair
    from rain.launch.fleet import Fleet, Machine

    work = tmp_path / "rain-launch-abcd1234"
    work.mkdir()
    host = KeyPair.generate("host")
    fleet = Fleet([Machine("node1", "10.99.0.11", "127.0.0.1", 2222, host, "1", "node1", tmp_path / "console")],
                  work, lambda: None)
    records.mark(fleet, _launch(work), KeyPair.generate("client"))
    assert os.stat(work / "id_ed25519").st_mode & 0o777 == 0o600
    assert (work / "known_hosts").read_text() == f"[127.0.0.1]:2222 {' '.join(host.public_line.split()[:2])}\n"
    assert records.launch_dir(_launch(work)) == work
