"""`fg-image launch --target opennebula` against the OpenNebula SIMULATOR (oned cannot run here).

Its VMs are real sshd processes on their own 127.0.0.N that take the host key from CONTEXT's USER_DATA
cloud-config and SSH_PUBLIC_KEY as cloud-init's OpenNebula datasource would, and run commands on this
host as root with a home of their own: these tests check the XML-RPC calls (the template's image,
size, key and tag), the waiting with the pinned host key, the job, the records and the release; not a
guest OS booting.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from support.builders import free_ssh_port
from support.cli import FG_IMAGE
from support.launching import cli_env, instances, registrations
from support.simulators.sshvm import VmFault

from rain.errors import ExitCode

pytestmark = pytest.mark.integration

DONE = 6


@pytest.fixture
def one(fg, sites, clean_tarball):
    """The opennebula site with a network for launches, and an image (not yet registered there)."""
    sim = sites["opennebula"].backend
    sim.ssh_port, sim.sshd_delay = free_ssh_port(), 0.3
    sites.rewrite("opennebula", network_id=7, ssh_port=sim.ssh_port, poll_interval=0.1)
    env = cli_env(sites)
    up = fg("upload", str(clean_tarball), "--name", "deb", "--os", "debian", "--release", "12", env=env)
    assert up.returncode == 0, up.stderr
    yield sim, env, up.stdout.strip()
    assert not any(m.leftover() for m in sim.machines), "no simulated VM's sshd is left"


def _context(vm):
    return next(v for k, v in vm.template if k == "CONTEXT")


def test_a_job_on_two_vms_of_the_registered_image_and_every_vm_terminated(fg, one, tmp_path):
    sim, env, image_id = one
    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\nmkdir -p out && cp \"$RAIN_MACHINES\" out/machines && hostname > out/ran\n")
    done = fg("launch", image_id, "--target", "opennebula", "--count", "2", "--size", "2x2048", "--run", str(job),
              "--download", "out", "--boot-timeout", "60", env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    [registration] = registrations(fg, env, image_id)
    vms = sorted(sim.vms.values(), key=lambda v: v.id)
    assert len(vms) == 2
    for vm in vms:
        attrs = dict(vm.template)
        assert (attrs["CPU"], attrs["MEMORY"], attrs["DISK"]["IMAGE_ID"], attrs["NIC"]["NETWORK_ID"]) == \
            ("2", "2048", registration["remote_id"], "7")
        assert vm.name.startswith("rain-") and attrs["RAIN_LAUNCH"] == vm.name.split("-")[1]
        assert _context(vm)["SSH_PUBLIC_KEY"].startswith("ssh-ed25519 ")
        assert vm.state == DONE, "every VM was terminated"
    addresses = [dict(vm.template)["NIC"]["IP"] for vm in vms]
    assert (tmp_path / "out" / "machines").read_text().split() == addresses
    assert "one.vm.action terminate-hard" in sim.calls
    assert instances(fg, env) == []


def test_a_detached_launch_past_its_lifetime_is_released_by_the_next_and_ctrl_c_terminates_vms(fg, one, rain_env):
    sim, env, image_id = one
    first = fg("launch", image_id, "--target", "opennebula", "--count", "2", "--detach", "--boot-timeout", "60",
               env={**env, "RAIN_LAUNCH_LIFETIME": "2"}, timeout=300)
    assert first.returncode == 0, first.stderr
    [launch] = instances(fg, env)
    assert launch["target"] == "opennebula" and launch["user"] == "root"
    running = [vm for vm in sim.vms.values() if vm.state != DONE]
    assert sorted(m["remote_id"] for m in launch["machines"]) == sorted(str(vm.id) for vm in running)
    time.sleep(2)  # its lifetime ends: nothing on the cloud ends it, the next launch does

    sim.vm_fault = VmFault.STUCK  # never RUNNING: Rain waits
    before = len(sim.vms)
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image_id, "--target", "opennebula", "--count", "2",
                             "--detach"], env={**rain_env, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(sim.vms) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(sim.vms) == before + 2, "both VMs were allocated"
    assert all(vm.state == DONE for vm in running), "the expired launch's VMs were terminated first"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert f"released launch {launch['id']}: its lifetime ended" in err
    assert all(vm.state == DONE for vm in sim.vms.values()), "the VMs Ctrl-C interrupted the wait for are gone"
    assert instances(fg, env) == []
