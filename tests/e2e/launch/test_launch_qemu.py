"""`fg-image launch` on the qemu site (this host, TCG): the cloud recipe's disk, stored in the repository,
boots on two machines that reach each other by name; a job runs on the head and its results come back;
afterwards no QEMU process, no forwarded port and no temporary file is left, also when fg-image is SIGKILLed.

Each machine is a real QEMU booting the image's own loader and cloud-init, a minute or two under TCG."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.builders import qemu_pids
from support.cli import FG_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
Fg = Callable[..., subprocess.CompletedProcess[str]]

JOB = """#!/bin/sh
set -e
echo "machines in $RAIN_MACHINES:"
cat "$RAIN_MACHINES"
second=$(sed -n 2p "$RAIN_MACHINES")
mkdir -p out
# by its name, with its host key checked (StrictHostKeyChecking is on by default)
ssh -o BatchMode=yes "$second" 'hostname; cat job/greeting' > out/from-second.txt
exit 7
"""


def _upload(fg: Fg, disk: Path) -> str:
    done = fg("upload", str(disk), "--os", "debian", "--release", "bookworm", "--arch", "amd64", timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_two_machines_run_a_job_that_reaches_the_second_by_name_and_leave_nothing(
        fg: Fg, rain_env: dict[str, str], cloud_qcow2: Path, tmp_path: Path) -> None:
    image = _upload(fg, cloud_qcow2)
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    (work / "in").mkdir(parents=True)
    scratch.mkdir()
    (work / "in" / "greeting").write_text("hello from the upload\n")
    (work / "job.sh").write_text(JOB)
    done = fg("launch", image, "--count", "2", "--run", "job.sh", "--upload", "in", "--download", "out",
              cwd=work, env={"TMPDIR": str(scratch)}, timeout=1500)
    assert done.returncode == 7, f"the exit code is the script's\n{done.stderr}"
    assert done.stdout.splitlines()[:3] == ["machines in /home/debian/machines:", "node1", "node2"], \
        "the script ran on the head, the head first in the machines file"
    assert (work / "out" / "from-second.txt").read_text() == "node2\nhello from the upload\n", \
        "node1 reached node2 by name over SSH, and the upload reached node2"
    ports = [int(p) for p in re.findall(r"ssh on 127\.0\.0\.1:(\d+)", done.stderr)]
    assert len(ports) == 2 and "released 2 machine(s)" in done.stderr
    assert qemu_pids(str(scratch)) == [], "no QEMU process is left"
    assert all(_refused(p) for p in ports), "no forwarded port is left"
    assert list(scratch.iterdir()) == [], "no temporary file is left"
    assert sorted(p.name for p in work.iterdir()) == ["in", "job.sh", "out"]
    logs = Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "logs"
    assert list(logs.iterdir()) == [], "a launch that worked keeps no console log"


def test_a_sigkilled_launch_leaves_no_qemu_and_no_files(
        fg: Fg, rain_env: dict[str, str], cloud_qcow2: Path, tmp_path: Path) -> None:
    image = _upload(fg, cloud_qcow2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image, "--count", "2", "--run", "job.sh"], cwd=tmp_path,
                            env={**rain_env, "TMPDIR": str(scratch)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _started(proc, 2)
    assert len(qemu_pids(str(scratch))) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while (qemu_pids(str(scratch)) or list(scratch.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert qemu_pids(str(scratch)) == [], "the watcher killed every machine"
    assert list(scratch.iterdir()) == [], "and removed the launch's files"


@pytest.fixture
def blank_disk(fg: Fg, tmp_path: Path) -> str:
    """A stored qcow2 with nothing on it: its machines start and never answer."""
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    return _upload(fg, disk)


def _started(proc: subprocess.Popen[str], count: int) -> None:
    assert proc.stderr is not None
    started, deadline = 0, time.monotonic() + 300
    while started < count and time.monotonic() < deadline:
        started += "started (ssh on" in proc.stderr.readline()
    assert started == count, "the machines started"


def test_machines_that_never_answer_are_one_error_and_are_released(
        fg: Fg, rain_env: dict[str, str], blank_disk: str, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntouch ran\n")
    done = fg("launch", blank_disk, "--count", "2", "--run", "job.sh", "--boot-timeout", "20", cwd=tmp_path,
              env={"TMPDIR": str(scratch)}, timeout=300)
    assert done.returncode == 12, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "machine node1: no SSH login as debian within 20s" in errors[0], done.stderr
    assert qemu_pids(str(scratch)) == [] and list(scratch.iterdir()) == [], "every machine was released"
    logs = sorted((Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "logs").glob("*/node*.console.log"))
    assert [p.name for p in logs] == ["node1.console.log", "node2.console.log"], "console logs are kept"
    assert f"console log: {logs[0]}" in errors[0], "the error names the log that is kept"
    assert "No bootable device" in logs[0].read_text(errors="replace")


def test_ctrl_c_while_the_machines_boot_releases_them(
        rain_env: dict[str, str], blank_disk: str, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    proc = subprocess.Popen([str(FG_IMAGE), "launch", blank_disk, "--count", "2", "--run", "job.sh"], cwd=tmp_path,
                            env={**rain_env, "TMPDIR": str(scratch)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _started(proc, 2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert qemu_pids(str(scratch)) == [] and list(scratch.iterdir()) == [], "released before fg-image exited"


def test_what_cannot_launch_is_one_line_before_anything_starts(
        fg: Fg, cloud_qcow2: Path, tmp_path: Path) -> None:
    tree = _upload(fg, cloud_qcow2.with_name("debian-bookworm-cloud.tar.zst"))
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    (tmp_path / "out").mkdir()
    cases = {
        (tree, "--run", "job.sh"): "is tar.zst, not a bootable disk",
        (tree, "--run", "missing.sh"): "--run missing.sh: no such file",
        (tree, "--run", "job.sh", "--target", "openstack"): "launch on 'openstack' is not available yet",
        (tree, "--run", "job.sh", "--download", "out"): "--download out: out is already here",
        (tree, "--run", "job.sh", "--download", "../up"): "--download '../up'",
        ("not-an-id", "--run", "job.sh"): "bad image id",
        ("0123456789ab", "--run", "job.sh"): "0123456789ab",
    }
    for args, message in cases.items():
        done = fg("launch", *args, cwd=tmp_path)
        assert done.returncode != 0, args
        assert message in done.stderr and len(done.stderr.strip().splitlines()) <= 2, (args, done.stderr)
    assert qemu_pids(str(tmp_path)) == []
