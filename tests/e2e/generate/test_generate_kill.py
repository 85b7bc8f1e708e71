"""`fg-image generate` killed outright (SIGKILL: no chance to clean up) leaves nothing behind:
no mount, no work directory, no qemu process. Rain's watcher process (rain/host/reaper.py)
undoes what the build had registered, and has a cloud builder's server deleted (leases)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.builders import OS_PASSWORD_ENV, OS_USER, BuildersFile, qemu_pids
from support.cli import FG_IMAGE, RECIPES
from support.host import mounts_under
from support.openstack_cloud import password

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start(rain_env: dict[str, str], data: Path, *args: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([str(FG_IMAGE), "generate", str(RECIPES / "debian-bookworm-minimal.yaml"), "--no-upload",
                             "--no-cache", *args], env={**rain_env, "RAIN_DATA_DIR": str(data), **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen[str], step: str, timeout: float = 600) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if step in line:
            return
        assert time.monotonic() < deadline, f"no {step!r} within {timeout}s: {''.join(seen[-5:])}"
    raise AssertionError(f"fg-image ended before {step!r}: {''.join(seen[-5:])}")


def _gone(check: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_a_sigkilled_local_build_leaves_no_mount_and_no_work_dir(rain_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _start(rain_env, data)
    _wait_for_step(proc, "packages")  # the root is mounted (overlay, /proc, /sys, /dev) by now
    work = data / "work"
    assert _gone(lambda: mounts_under(work) != [], 60), "expected the build's mounts while it runs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(lambda: mounts_under(data) == []), f"mounts left: {mounts_under(data)}"
    assert _gone(lambda: not any(work.iterdir())), f"work dirs left: {list(work.iterdir())}"


def test_a_sigkilled_qemu_build_leaves_no_qemu_and_no_files(rain_env: dict[str, str], tmp_path: Path,
                                                           qemu_bundle: tuple[str, Path]) -> None:
    data = tmp_path / "data"
    proc = _start(rain_env, data, "--builder", "qemu", env={"RAIN_BUILDERS_FILE": str(qemu_bundle[1])})
    _wait_for_step(proc, "base system")  # the VM is up; the base system is being made for it
    marker = str(data / "work")
    assert qemu_pids(marker), "expected the build's qemu while it runs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(lambda: qemu_pids(marker) == []), "qemu outlived fg-image"
    assert _gone(lambda: not any((data / "work").iterdir())), f"files left: {list((data / 'work').iterdir())}"


def test_a_sigkilled_openstack_build_has_its_server_deleted_by_the_watcher(
        rain_env: dict[str, str], tmp_path: Path, openstack_builders_file: BuildersFile, openstack_sim: Any) -> None:
    """The watcher holds no cloud credentials of its own, so a SIGKILLed build's Nova server outlives the
    build. The build's lease (DATA_DIR/builders/openstack/leases/) names the server and key pair and the
    process that owned them; the watcher runs `fg-image builder reap openstack` (with the killed process's
    environment) as soon as that process is gone, which finds it gone and deletes both."""
    data = tmp_path / "data"
    env = {"RAIN_BUILDERS_FILE": str(openstack_builders_file.path), OS_PASSWORD_ENV: password(OS_USER)}
    before = set(Path("/var/tmp").glob("rain-build.*"))
    proc = _start(rain_env, data, "--builder", "openstack", env=env)
    _wait_for_step(proc, "base system")  # the server is up
    [server_id] = list(openstack_sim.servers)
    [lease] = list((data / "builders" / "openstack" / "leases").glob("rain-*.json"))
    assert json.loads(lease.read_text())["ids"]["server"] == server_id
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log = data / "builders" / "openstack" / "reap.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().endswith("exit 0\n")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert openstack_sim.servers == {} and not openstack_sim.keypairs, "the watcher's reap deleted both"
    assert not lease.exists()
    # nobody watched the watcher: what it did is in the builder's reap.log, found by the lease
    said = log.read_text()
    assert re.search(rf"deleted OpenStack keypair rain-\S+, server {server_id} left by build rain-\S+: "
                     rf"its fg-image pid {proc.pid} on \S+ is gone", said), said
    assert said.splitlines()[-1] == "exit 0", said

    run_env = {**rain_env, "RAIN_DATA_DIR": str(data), **env}
    again = subprocess.run([str(FG_IMAGE), "builder", "reap", "openstack"], env=run_env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "no machines left by a killed fg-image" in again.stdout, again.stderr
    # a simulated VM's disk is this host's /var/tmp; a deleted real server takes the build's directory with it
    for left in set(Path("/var/tmp").glob("rain-build.*")) - before:
        shutil.rmtree(left)
