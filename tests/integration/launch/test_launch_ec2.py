"""`fg-image launch --target ec2` against moto's real EC2 server on 127.0.0.1.

moto runs no machine behind its API: its instances go to `running` with a private address nothing answers
on. So these tests check the calls (the AMI Rain registered, the instance type, the key pair, the tags),
the records while Rain waits, and that every instance is terminated and the key pair deleted however the
launch ends: by `instances stop`, by Ctrl-C, by machines that never answer; not a job.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import FG_IMAGE
from support.launching import cli_env, instances, registrations

from rain.errors import ExitCode

pytestmark = pytest.mark.integration


@pytest.fixture
def aws(fg, sites, clean_tarball):
    """The ec2 site with an instance type for launches, and an image (not yet registered there)."""
    sites.rewrite("ec2", instance_type="t3.micro", poll_interval=0.1)
    env = cli_env(sites)
    up = fg("upload", str(clean_tarball), "--name", "deb", "--os", "debian", "--release", "12", env=env)
    assert up.returncode == 0, up.stderr
    return sites["ec2"].backend, env, up.stdout.strip()


def _live(ec2):
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")]


def test_instances_carry_the_ami_type_and_key_are_listed_while_rain_waits_and_stop_all_terminates_them(
        fg, aws, rain_env):
    ec2, env, image_id = aws
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image_id, "--target", "ec2", "--count", "2", "--size",
                             "t3.small", "--detach", "--boot-timeout", "300"], env={**rain_env, **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (launches := instances(fg, env)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert len(launches) == 1, proc.stderr.read() if proc.poll() is not None else "no record"
        [launch] = launches
        [registration] = registrations(fg, env, image_id)
        live = _live(ec2)
        assert len(live) == 2 and {(i["ImageId"], i["InstanceType"]) for i in live} == \
            {(registration["remote_id"], "t3.small")}
        [pair] = ec2.describe_key_pairs()["KeyPairs"]
        assert {i["KeyName"] for i in live} == {pair["KeyName"]} and pair["KeyName"].startswith("rain-launch-")
        assert sorted(m["remote_id"] for m in launch["machines"]) == sorted(i["InstanceId"] for i in live)
        assert (launch["target"], launch["user"]) == ("ec2", "admin")

        # two are recorded and the cap is three: two more are refused before anything starts
        refused = fg("launch", image_id, "--target", "ec2", "--count", "2", "--detach",
                     env={**env, "RAIN_LAUNCH_MAX_MACHINES": "3"})
        assert refused.returncode == ExitCode.QUOTA, refused.stderr
        assert len(_live(ec2)) == 2

        stopped = fg("instances", "stop", "--all", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert "(2 machine(s) were running)" in stopped.stderr
        assert _live(ec2) == [] and ec2.describe_key_pairs()["KeyPairs"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert instances(fg, env) == []


def test_a_launch_killed_while_it_waits_has_its_instances_terminated_and_its_record_dropped(fg, aws, rain_env):
    """SIGKILL once the launch is recorded: Rain's watcher runs `fg-image instances reap`, which terminates
    the instances and deletes the key pair by the launch's lease, and drops the record."""
    ec2, env, image_id = aws
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image_id, "--target", "ec2", "--count", "2", "--detach",
                             "--boot-timeout", "600"], env={**rain_env, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not instances(fg, env) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert len(instances(fg, env)) == 1 and len(_live(ec2)) == 2, "recorded and waiting for SSH"
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    deadline = time.monotonic() + 120
    while (_live(ec2) or instances(fg, env)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live(ec2) == [] and ec2.describe_key_pairs()["KeyPairs"] == []
    assert instances(fg, env) == []
    again = fg("instances", "reap", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip() == "no machines left by a killed launch on this host", "nothing is left to reap"
    # nobody watched the watcher's reap: what it did is in the launch log directory
    said = (Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "reap.log").read_text().splitlines()
    assert "the process that asked for it is gone; running" in said[0] and said[-1] == "exit 0", said
    assert any(line.startswith("released launch ") and "(2 machine(s))" in line for line in said), said


def test_instances_that_never_answer_are_terminated_and_the_error_is_one_line(fg, aws):
    ec2, env, image_id = aws
    failed = fg("launch", image_id, "--target", "ec2", "--detach", "--boot-timeout", "5", env=env, timeout=300)
    assert failed.returncode == ExitCode.TARGET, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no SSH login as admin within 5s" in errors[0], failed.stderr
    assert _live(ec2) == [] and ec2.describe_key_pairs()["KeyPairs"] == []
    assert instances(fg, env) == []
