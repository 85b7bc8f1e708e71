"""`fg-image launch` on the qemu site (this host, TCG): the cloud recipe's disk, stored in the repository,
boots on two machines that reach each other by name; a job runs on the head and its results come back;
afterwards no QEMU process, no forwarded port and no temporary file is left, also when fg-image is SIGKILLed.

Each machine is a real QEMU booting the image's own loader and cloud-init, a minute or two under TCG."""

from __future__ import annotations

import os
import re
import shlex
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


@pytest.fixture(autouse=True)
def _lifetime(rain_env: dict[str, str]) -> None:
    """A backstop: a machine a failed test leaves behind dies within half an hour, not a day."""
    rain_env["RAIN_LAUNCH_LIFETIME"] = "1800"


def _no_records(fg: Fg) -> bool:
    return fg("instances", "list").stdout.strip() == "no machines launched"


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


@pytest.fixture
def blank_disk(fg: Fg, tmp_path: Path) -> str:
    """A stored qcow2 with nothing on it: its machines start and never answer."""
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    return _upload(fg, disk)


def _qemus(scratch: Path) -> list[int]:
    """The QEMU processes (not their `timeout` wrappers) of launches whose files are under `scratch`."""
    def comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text()
        except OSError:  # gone since
            return ""

    return [pid for pid in qemu_pids(str(scratch)) if comm(pid).startswith("qemu-system")]


def _started(proc: subprocess.Popen[str], count: int) -> None:
    assert proc.stderr is not None
    started, deadline = 0, time.monotonic() + 300
    while started < count and time.monotonic() < deadline:
        started += "started (ssh on" in proc.stderr.readline()
    assert started == count, "the machines started"


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
    assert _no_records(fg), "its record went with its machines"


def _launch_two(rain_env: dict[str, str], image: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """`fg-image launch IMAGE --count 2 --run job.sh`, its temporary files under the returned directory."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image, "--count", "2", "--run", "job.sh"], cwd=tmp_path,
                            env={**rain_env, "TMPDIR": str(scratch)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, scratch


def test_a_sigkilled_launch_leaves_no_qemu_and_no_files(
        rain_env: dict[str, str], blank_disk: str, tmp_path: Path) -> None:
    proc, scratch = _launch_two(rain_env, blank_disk, tmp_path)
    try:
        _started(proc, 2)
        assert len(_qemus(scratch)) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while (qemu_pids(str(scratch)) or list(scratch.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert qemu_pids(str(scratch)) == [], "the watcher killed every machine"
    assert list(scratch.iterdir()) == [], "and removed the launch's files"


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
    assert _no_records(fg), "machines that never came up are never recorded"


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_while_the_machines_boot_releases_them(
        fg: Fg, rain_env: dict[str, str], blank_disk: str, tmp_path: Path, signal_number: int) -> None:
    proc, scratch = _launch_two(rain_env, blank_disk, tmp_path)
    try:
        _started(proc, 2)
        proc.send_signal(signal_number)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
        proc.wait()
    assert qemu_pids(str(scratch)) == [] and list(scratch.iterdir()) == [], "released before fg-image exited"
    assert _no_records(fg)


def _ssh(command: str) -> str:
    """Run `hostname` through the ssh command launch printed, with OpenSSH's own client."""
    ssh, *rest = shlex.split(command)
    assert ssh == "ssh", command
    done = subprocess.run([ssh, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", *rest, "hostname"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_interactive_and_detached_machines_are_listed_reachable_capped_and_released(
        fg: Fg, rain_env: dict[str, str], cloud_qcow2: Path, tmp_path: Path) -> None:
    image = _upload(fg, cloud_qcow2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**rain_env, "TMPDIR": str(scratch)}
    interactive = subprocess.Popen([str(FG_IMAGE), "launch", image, "--interactive"], env=env, cwd=tmp_path,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert interactive.stdin is not None and interactive.stdout is not None
    try:  # both boot at once
        detached = fg("launch", image, "--detach", env={"TMPDIR": str(scratch)}, timeout=1500)
        assert detached.returncode == 0, detached.stderr
        assert _ssh(detached.stdout.strip().splitlines()[-1]) == "node1", "the printed command logs in, host key pinned"
        assert _ssh(interactive.stdout.readline().strip()) == "node1"
        listed = fg("instances", "list")
        assert listed.returncode == 0 and listed.stdout.count(" running ") == 2, listed.stdout
        capped = fg("launch", image, "--detach", env={"RAIN_LAUNCH_MAX_MACHINES": "2", "TMPDIR": str(scratch)})
        assert capped.returncode == 7 and "lets you run 2 at once here" in capped.stderr, capped.stderr
        assert len(_qemus(scratch)) == 2, "the refused launch started nothing"

        interactive.stdin.write("\n")
        interactive.stdin.flush()
        assert interactive.wait(120) == 0, "Enter releases an interactive launch"
        assert len(_qemus(scratch)) == 1, "and only its machine"
        assert fg("instances", "list").stdout.count(" running ") == 1
        stopped = fg("instances", "stop", "--all")
        assert stopped.returncode == 0 and "(1 machine(s) were running)" in stopped.stderr, stopped.stderr
        assert fg("instances", "list").stdout.strip() == "no machines launched"
        assert qemu_pids(str(scratch)) == [] and list(scratch.iterdir()) == [], "stop removed the machine and its files"
        assert list((Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "logs").iterdir()) == []
    finally:  # nothing outlives a failed test either
        interactive.kill()
        interactive.wait()
        fg("instances", "stop", "--all")


def test_what_cannot_launch_is_one_line_before_anything_starts(
        fg: Fg, cloud_qcow2: Path, tmp_path: Path) -> None:
    tree = _upload(fg, cloud_qcow2.with_name("debian-bookworm-cloud.tar.zst"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    (tmp_path / "out").mkdir()
    cases = {
        (tree, "--run", "job.sh"): "is tar.zst, not a bootable disk",
        (tree, "--run", "missing.sh"): "--run missing.sh: no such file",
        (tree, "--run", "job.sh", "--target", "vmware"): "launch on 'vmware' is not available",
        (tree, "--run", "job.sh", "--size", "m1.small"): "--size is for a cloud target",
        (tree, "--run", "job.sh", "--target", "ec2", "--memory", "1024"): "--memory and --accel are for the qemu",
        (tree, "--run", "job.sh", "--site", "lab"): "--site is for the hpc and cloud targets",
        (tree, "--run", "job.sh", "--download", "out"): "--download out: out is already here",
        (tree, "--run", "job.sh", "--download", "../up"): "--download '../up'",
        (tree,): "give one of --run SCRIPT, --interactive or --detach",
        (tree, "--detach", "--interactive"): "--interactive and --detach do not go together",
        (tree, "--detach", "--download", "x"): "--upload and --download go with --run",
        ("not-an-id", "--run", "job.sh"): "bad image id",
        ("0123456789ab", "--run", "job.sh"): "0123456789ab",
    }
    for args, message in cases.items():
        done = fg("launch", *args, cwd=tmp_path, env={"TMPDIR": str(scratch)})
        assert done.returncode != 0, args
        assert message in done.stderr and len(done.stderr.strip().splitlines()) <= 2, (args, done.stderr)
    assert qemu_pids(str(scratch)) == [] and list(scratch.iterdir()) == [], "nothing started, nothing was made"
    assert _no_records(fg)
