"""The opennebula and openstack builder providers against their SIMULATORS (fixtures in support/builders.py):
OpenNebula's, and Nova's in the catalog of the real Keystone, booting the builder image found in the real Glance.

Each simulated VM is a real sshd on its own 127.0.0.N, so "the machine answers
with the pinned host key and runs commands as root" is checked over real SSH.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from support.builders import BuildersFile  # the fixtures come through conftest.py
from support.simulators.sshvm import VmFault

from rain.errors import BuildError, ConfigError, RainError, Unauthorized, Unreachable
from rain.generate.builders.base import get_builder, get_provider
from rain.generate.builders.machine import Machine
from rain.host.ssh import MachineKeys

pytestmark = pytest.mark.integration


@dataclass
class Cloud:
    name: str
    sim: Any
    file: BuildersFile
    settings: Any
    repo: Any

    def live_vms(self) -> list[str]:
        """VMs the simulator still has (not terminated / deleted)."""
        if self.name == "opennebula":
            return [str(vm.id) for vm in self.sim.vms.values() if vm.state != 6]
        return list(self.sim.servers)

    def provider(self) -> Any:
        return get_provider(self.name, self.settings, self.repo)

    def launch(self, tmp_path: Path) -> Machine:
        return self.provider().launch("t1", MachineKeys.generate("t1"), tmp_path)  # type: ignore[no-any-return]


@pytest.fixture(params=["opennebula", "openstack"])
def cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    name = request.param
    sim = request.getfixturevalue(f"{name}_sim")
    file = request.getfixturevalue(f"{name}_builders_file")
    settings, repo = request.getfixturevalue(f"{name}_builder_env")
    yield Cloud(name, sim, file, settings, repo)


def ssh(machine: Machine, argv: str) -> str:
    """Run a command on the machine with paramiko, trusting only the pinned host key."""
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[{machine.host}]:{machine.port}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=machine.keys.host.public_blob))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(machine.keys.client.private_openssh))
    client.connect(machine.host, machine.port, username=machine.user, pkey=key, timeout=10,
                   allow_agent=False, look_for_keys=False)
    try:
        _, out, _ = client.exec_command(argv, timeout=10)
        return out.read().decode().strip()
    finally:
        client.close()


def assert_one_line(err: RainError, *words: str) -> None:
    text = err.one_line()
    assert "\n" not in text
    for word in words:
        assert word in text, text


def test_launch_gives_a_root_shell_with_the_pinned_host_key_and_release_removes_the_vm(
        cloud: Cloud, tmp_path: Path) -> None:
    machine = cloud.launch(tmp_path)
    assert machine.host.startswith("127.0.0.") and machine.host != "127.0.0.1"
    assert cloud.live_vms(), "the VM exists while the machine is up"
    assert ssh(machine, "id -u") == "0"
    assert machine.keep is not None and "left running: ssh -i" in machine.keep()
    vm = cloud.sim.machines[-1]
    machine.release()
    assert cloud.live_vms() == []
    assert not vm.running and vm.leftover() == []
    machine.release()  # idempotent


def test_one_provider_launches_machines_in_parallel_each_on_its_own_address(cloud: Cloud, tmp_path: Path) -> None:
    provider = cloud.provider()
    with ThreadPoolExecutor(2) as pool:
        machines = list(pool.map(lambda n: provider.launch(f"p{n}", MachineKeys.generate(f"p{n}"), tmp_path),
                                 range(2)))
    try:
        assert len({m.host for m in machines}) == 2
        assert [ssh(m, "id -u") for m in machines] == ["0", "0"]
    finally:
        for m in machines:
            m.release()
    assert cloud.live_vms() == []


def test_get_builder_uses_the_provider(cloud: Cloud) -> None:
    builder = get_builder(cloud.name, cloud.settings, cloud.repo)
    assert builder.local is False and builder.name == cloud.name
    assert builder.provider.limit == cloud.file.config[cloud.name].get("limit", 2), "the builders file's limit"


def test_unreachable_endpoint_is_a_one_line_error(cloud: Cloud, tmp_path: Path) -> None:
    key, path = ("endpoint", "/RPC2") if cloud.name == "opennebula" else ("auth_url", "/v3")
    cloud.file.update(**{key: f"http://127.0.0.1:{closed_port()}{path}"})
    with pytest.raises(Unreachable) as err:
        cloud.launch(tmp_path)
    assert_one_line(err.value, "cannot reach")
    assert cloud.live_vms() == []


def test_bad_credentials_are_unauthorized(cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cloud.file.config[cloud.name]["password_env"], "wrong")
    with pytest.raises(Unauthorized) as err:
        cloud.launch(tmp_path)
    assert_one_line(err.value, "refused")
    assert cloud.live_vms() == []


def test_missing_password_is_refused_before_any_vm(cloud: Cloud, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cloud.file.config[cloud.name]["password_env"])
    with pytest.raises(ConfigError):
        cloud.provider()
    assert cloud.live_vms() == []


FAULT_TIMEOUT = {"opennebula": 1.5, "openstack": 4.5}
"""boot_timeout in the fault tests. It covers the login and the look-ups too, which for openstack go to the real
Keystone and Glance (about a second on a loaded machine) before Nova's simulator is asked for a server."""


@pytest.mark.parametrize("fault, kind, words", [
    (VmFault.FAIL, BuildError, ("went to",)),
    (VmFault.STUCK, BuildError, (" still ", " after {timeout:.0f}s", "raise boot_timeout")),
    (VmFault.NO_SSHD, Unreachable, ("did not answer within", "sshd")),
    (VmFault.WRONG_HOST_KEY, Unauthorized, ("presented host key", "not the host key Rain gave it")),
    (VmFault.REFUSE_CLIENT_KEY, Unauthorized, ("refused Rain's client key for root",)),
])
def test_a_vm_that_fails_is_deleted_with_a_one_line_error(cloud: Cloud, tmp_path: Path, fault: VmFault,
                                                          kind: type[RainError], words: tuple[str, ...]) -> None:
    cloud.sim.vm_fault = fault
    timeout = FAULT_TIMEOUT[cloud.name]
    cloud.file.update(boot_timeout=timeout)
    with pytest.raises(kind) as err:
        cloud.launch(tmp_path)
    assert_one_line(err.value, *(word.format(timeout=timeout) for word in words))
    assert cloud.live_vms() == []
    left = {pid: open(f"/proc/{pid}/stat").read() for m in cloud.sim.machines for pid in m.leftover()}
    assert not left


def test_opennebula_template_keeps_its_context_and_gains_rain_s(opennebula_sim: Any, opennebula_builders_file: Any,
                                                               opennebula_builder_env: Any, tmp_path: Path) -> None:
    template_id = opennebula_sim.add_template(
        'CPU = "1"\nMEMORY = "512"\nDISK = [ IMAGE_ID = "3" ]\nNIC = [ NETWORK_ID = "0" ]\n'
        'CONTEXT = [ START_SCRIPT = "echo \\"hi\\"", SSH_PUBLIC_KEY = "$USER[SSH_PUBLIC_KEY]" ]\n')
    config = opennebula_builders_file.config["opennebula"]
    del config["image_id"], config["network_id"]
    opennebula_builders_file.update(template_id=template_id)
    settings, repo = opennebula_builder_env
    keys = MachineKeys.generate("t2")
    machine = get_provider("opennebula", settings, repo).launch("t2", keys, tmp_path)
    try:
        vm = opennebula_sim.vms[int(machine.name.rsplit("-", 1)[1])]
        context = dict(vm.template)["CONTEXT"]
        assert context["START_SCRIPT"] == 'echo "hi"'
        assert context["SSH_PUBLIC_KEY"] == keys.client.public_line
        assert dict(vm.template)["MEMORY"] == "512"
        assert ssh(machine, "id -u") == "0"
    finally:
        machine.release()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_machine_whose_owner_died_is_deleted_by_the_next_launch_and_a_kept_one_is_not(
        cloud: Cloud, tmp_path: Path) -> None:
    """A SIGKILLed fg-image cannot release its cloud VM; its lease stays and names it (the real SIGKILL of a
    whole build: tests/e2e/generate/test_generate_kill.py). Here the owner's death is written into the lease."""
    import json
    import subprocess

    leases = cloud.settings.data_path / "builders" / cloud.name / "leases"
    orphan = cloud.launch(tmp_path / "a")
    [lease] = list(leases.glob("rain-*.json"))
    assert cloud.provider().reap() == [], "a lease whose fg-image still runs is not touched"
    assert len(cloud.live_vms()) == 1
    dead = subprocess.Popen(["true"])
    dead.wait()
    lease.write_text(json.dumps({**json.loads(lease.read_text()), "pid": dead.pid}))

    kept = cloud.launch(tmp_path / "b")  # the next launch reaps first
    assert len(cloud.live_vms()) == 1, "the orphan is gone, the new machine is up"
    assert not lease.exists()
    assert kept.keep is not None and "left running" in kept.keep()
    assert list(leases.glob("rain-*.json")) == [], "a kept machine is its user's: no lease, never reaped"
    assert cloud.provider().reap() == [] and len(cloud.live_vms()) == 1
    kept.release()
    orphan.release()  # idempotent against a machine already deleted
    assert cloud.live_vms() == []
