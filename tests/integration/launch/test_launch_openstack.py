"""`fg-image launch --target openstack` against the real Keystone and Glance and the Nova SIMULATOR.

No machine can boot behind Nova here (support/simulators/nova.py says why): each server the simulator
makes ACTIVE is a real sshd on its own 127.0.0.N that takes the host key from the cloud-config user-data
and the key pair's key, as cloud-init would, and runs commands on this host as root with a home of its
own. So these tests check the API calls (image, key pair, flavor, network), the waiting with the pinned
host key, the job and its results, the records and the release; not a guest OS booting.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import FG_IMAGE
from support.launching import claiming, cli_env, instances, registrations
from support.simulators.sshvm import VmFault

from rain.errors import ExitCode

pytestmark = pytest.mark.integration

JOB = """#!/bin/sh
set -e
head=$(sed -n 1p "$RAIN_MACHINES"); second=$(sed -n 2p "$RAIN_MACHINES")
mkdir -p out
# the launch put its key and every machine's pinned host key under ~/.ssh: a real image's ssh finds them
ssh -p {port} -i "$HOME/.ssh/id_ed25519" -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -o BatchMode=yes \\
    "root@$second" 'cat "$HOME/machines"; echo "$HOME"' > out/from-second
echo "head $head" > out/head
cat input/data >> out/head
"""


@pytest.fixture
def cloud(fg, sites, openstack_sim, clean_tarball):
    """The openstack site with a flavor and a network for launches, and an image (not yet registered there)."""
    sites.rewrite("openstack", flavor="m1.small", network="build-net", ssh_port=openstack_sim.ssh_port,
                  poll_interval=0.1)
    env = cli_env(sites)
    up = fg("upload", str(clean_tarball), "--name", "deb", "--os", "debian", "--release", "12", env=env)
    assert up.returncode == 0, up.stderr
    return env, up.stdout.strip()


def test_a_job_on_two_servers_registers_first_brings_results_back_and_deletes_everything(
        fg, cloud, sites, openstack_sim, tmp_path):
    env, image_id = cloud
    job = tmp_path / "job.sh"
    job.write_text(JOB.format(port=openstack_sim.ssh_port))
    (tmp_path / "in" / "input").mkdir(parents=True)
    (tmp_path / "in" / "input" / "data").write_text("uploaded\n")
    done = fg("launch", image_id, "--target", "openstack", "--count", "2", "--user", "root", "--run", str(job),
              "--upload", str(tmp_path / "in"), "--download", "out", "--boot-timeout", "60", env=env, cwd=tmp_path,
              timeout=300)
    assert done.returncode == 0, done.stderr
    assert "registering it first" in done.stderr
    [registration] = registrations(fg, env, image_id)
    glance_id = registration["remote_id"]
    assert sites["openstack"].holds(glance_id)

    # the servers were made of that Glance image, with the site's flavor, network and the launch's key pair
    made = list(openstack_sim.machines)
    assert len(made) == 2 and openstack_sim.max_live_servers == 2
    addresses = [m.address for m in made]
    out = tmp_path / "out"
    assert (out / "head").read_text().split("\n")[0] == f"head {addresses[0]}"
    assert (out / "head").read_text().endswith("uploaded\n"), "the upload reached the head"
    seen = (out / "from-second").read_text().split("\n")
    assert seen[:2] == addresses, "the machines file lists the addresses, the head first, on every machine"
    assert seen[2].startswith("/tmp/sshvm-"), "the second machine answered from its own home"

    # everything is gone: servers, key pair, record, the simulated VMs' sshd
    assert openstack_sim.servers == {} and openstack_sim.keypairs == {}
    assert len(openstack_sim.deleted_servers) == 2
    assert not any(m.running for m in made)
    assert instances(fg, env) == []


def test_detached_servers_are_listed_counted_against_the_cap_and_stopped(fg, cloud, sites, openstack_sim, tmp_path,
                                                                      rain_env):
    env, image_id = cloud
    first = fg("launch", image_id, "--target", "openstack", "--count", "2", "--user", "root", "--size", "m1.medium",
               "--detach", "--boot-timeout", "60", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    [registration] = registrations(fg, env, image_id)
    servers = list(openstack_sim.servers.values())
    assert len(servers) == 2
    assert {(s["image"]["id"], s["flavor"]["id"], s["status"]) for s in servers} == \
        {(registration["remote_id"], "2", "ACTIVE")}
    [(_, keypair)] = openstack_sim.keypairs
    assert {s["key_name"] for s in servers} == {keypair} and keypair.startswith("rain-launch-")

    [launch] = instances(fg, env)
    assert (launch["target"], launch["site"], launch["user"]) == ("openstack", "default", "root")
    assert sorted(m["remote_id"] for m in launch["machines"]) == sorted(s["id"] for s in servers)

    # the printed command logs in to the head with the launch's key and its pinned host key only
    ssh = first.stdout.strip().split() + ["-o", "BatchMode=yes", "cat", '"$HOME/machines"']
    answer = subprocess.run(ssh, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == [m["address"] for m in launch["machines"]]

    # two are running and the cap is two: a third is refused before anything starts, the image registered once
    refused = fg("launch", image_id, "--target", "openstack", "--user", "root", "--detach",
                 env={**env, "RAIN_LAUNCH_MAX_MACHINES": "2"})
    assert refused.returncode == ExitCode.QUOTA, refused.stderr
    assert "launch_max_machines" in refused.stderr and len(refused.stderr.strip().splitlines()) <= 2
    assert len(openstack_sim.servers) == 2 and len(openstack_sim.keypairs) == 1
    assert len(registrations(fg, env, image_id)) == 1
    # and a launch that has claimed a machine but is not recorded yet (still registering, say) counts too
    other = claiming(Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "claims", 1, 3)
    try:
        assert other.stdout is not None and other.stdout.readline() == "claimed\n"
        refused = fg("launch", image_id, "--target", "openstack", "--user", "root", "--detach",
                     env={**env, "RAIN_LAUNCH_MAX_MACHINES": "3"})
        assert refused.returncode == ExitCode.QUOTA, refused.stderr
        assert "1 more machine(s) would make 4; launch_max_machines lets you run 3" in refused.stderr
    finally:
        other.communicate("\n", timeout=30)
    assert len(openstack_sim.servers) == 2

    # bob may read the image: his launch registers it for himself (the admin's registration is the admin's),
    # and the admin cannot stop it, as the admin's credentials do not reach bob's machines
    assert fg("users", "add", "bob", env=env).returncode == 0
    assert fg("modify", image_id, "--public", env=env).returncode == 0
    bobs = fg("launch", image_id, "--target", "openstack", "--user", "root", "--detach", "--boot-timeout", "60",
              env={**env, "RAIN_USER": "bob"}, timeout=300)
    assert bobs.returncode == 0, bobs.stderr
    assert sorted(r["by"] for r in registrations(fg, env, image_id)) == ["admin", "bob"]
    [bob_launch] = instances(fg, {**env, "RAIN_USER": "bob"})
    forbidden = fg("instances", "stop", bob_launch["id"], env=env)
    assert forbidden.returncode == ExitCode.FORBIDDEN, forbidden.stderr
    assert "only their credentials reach its machines" in forbidden.stderr
    assert fg("instances", "stop", bob_launch["id"], env={**env, "RAIN_USER": "bob"}).returncode == 0
    assert len(openstack_sim.servers) == 2

    # a release that fails (Keystone unreachable) is one line and keeps the record, for the next try
    auth_url = sites.config["openstack"]["default"]["auth_url"]
    sites.rewrite("openstack", auth_url="http://127.0.0.1:9/v3")
    failed = fg("instances", "stop", launch["id"], env=env)
    assert failed.returncode != 0 and failed.stderr.count("error:") == 1, failed.stderr
    kept = fg("instances", "stop", "--all", env=env)
    assert f"warning: launch {launch['id']} stays" in kept.stderr, kept.stderr
    assert [kept["id"] for kept in instances(fg, env)] == [launch["id"]] and len(openstack_sim.servers) == 2
    sites.rewrite("openstack", auth_url=auth_url)

    stopped = fg("instances", "stop", "--all", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "(2 machine(s) were running)" in stopped.stderr
    assert openstack_sim.servers == {} and openstack_sim.keypairs == {}
    assert instances(fg, env) == []
    assert not Path(launch["detail"]["work"]).exists(), "the launch's key went with it"


@pytest.mark.parametrize("fault, message", [  # a server going to ERROR: the builder tests, on the same Nova code
    (VmFault.NO_SSHD, "no SSH login as root within 3s"),
    (VmFault.WRONG_HOST_KEY, "presented host key"),
])
def test_a_server_that_never_lets_rain_in_is_deleted_and_the_error_is_one_line(fg, cloud, openstack_sim, fault,
                                                                               message):
    env, image_id = cloud
    openstack_sim.vm_fault = fault
    failed = fg("launch", image_id, "--target", "openstack", "--user", "root", "--detach", "--boot-timeout", "3",
                env=env, timeout=300)
    assert failed.returncode == ExitCode.TARGET, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], failed.stderr
    assert openstack_sim.servers == {} and openstack_sim.keypairs == {}
    assert len(openstack_sim.deleted_servers) == 1
    assert instances(fg, env) == []


@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_ctrl_c_or_sigkill_while_waiting_for_the_servers_deletes_them(fg, cloud, openstack_sim, rain_env, kill):
    """Ctrl-C: the launch releases what it made. SIGKILL, after the servers exist and before the launch is
    recorded: its lease is all that names them, and Rain's watcher has them deleted at once."""
    env, image_id = cloud
    assert fg("launch", image_id, "--target", "openstack", "--user", "root", "--detach", env=env,
              timeout=300).returncode == 0  # registered (the slow part) and running
    assert fg("instances", "stop", "--all", env=env).returncode == 0
    openstack_sim.vm_fault = VmFault.STUCK  # never ACTIVE: Rain waits
    proc = subprocess.Popen([str(FG_IMAGE), "launch", image_id, "--target", "openstack", "--count", "2", "--user",
                             "root", "--detach"], env={**rain_env, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(openstack_sim.servers) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(openstack_sim.servers) == 2, "both servers were created"
    leases = Path(rain_env["RAIN_DATA_DIR"]) / "launch" / "leases"
    assert len(list(leases.glob("openstack-*.json"))) == 1, "the launch holds a lease while it waits"
    proc.send_signal(kill)
    _, err = proc.communicate(timeout=60)
    if kill == signal.SIGINT:
        assert proc.returncode == ExitCode.INTERRUPTED, err
        assert "launch interrupted" in err
    else:
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 120
        while (openstack_sim.servers or openstack_sim.keypairs) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert openstack_sim.servers == {} and openstack_sim.keypairs == {}
    assert len(openstack_sim.deleted_servers) == 3  # the first launch's, and these two
    assert list(leases.glob("*.json")) == []
    assert instances(fg, env) == []
