"""Cloud builder environments on 127.0.0.1: the OpenNebula and OpenStack SIMULATORS with real-sshd VMs.

Neither cloud can run here, so the providers talk to tests/simulators/opennebula.py
(XML-RPC) and tests/simulators/openstack.py (Keystone v3, Nova, Glance, Neutron
look-ups); each simulated VM is a real OpenSSH sshd on its own 127.0.0.N
(tests/simulators/sshvm.py), so the Machine a provider returns is a real SSH
endpoint where commands run on this host as root.

Fixtures (import them into a test module or conftest.py):
- `opennebula_sim`, `openstack_sim`: the running simulator (fault knobs: `vm_fault`);
  teardown fails the test if a VM was left undeleted or any of its sshd processes lives on.
- `opennebula_builders_file`, `openstack_builders_file`: the builders file the env points at;
  `.update(**changes)` rewrites that provider's section.
- `opennebula_builder_env`, `openstack_builder_env`: `(settings, repo)` such that
  `get_builder(name, settings, repo)` / `get_provider(...)` use the running simulator.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

_TESTS = Path(__file__).resolve().parents[2]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from simulators.opennebula import OpenNebulaSimulator  # noqa: E402
from simulators.openstack import OpenStackSimulator  # noqa: E402

from rain.config import Settings  # noqa: E402
from rain.repository.connect import open_store  # noqa: E402

ONE_PASSWORD_ENV, OS_PASSWORD_ENV = "RAIN_TEST_ONE_BUILDER_PASSWORD", "RAIN_TEST_OS_BUILDER_PASSWORD"


def free_ssh_port() -> int:
    """A port no socket on any local address uses now (each simulated VM listens on it, on its own IP)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@dataclass
class BuildersFile:
    path: Path
    section: str
    config: dict[str, Any]

    def update(self, **changes: Any) -> None:
        self.config[self.section].update(changes)
        self.path.write_text(yaml.safe_dump(self.config))


def _check_no_vm_left(machines: list[Any], undeleted: list[str]) -> None:
    live = {m.address: m.leftover() for m in machines if m.leftover()}
    assert not undeleted, f"VMs left undeleted in the simulator: {undeleted}"
    assert not live, f"sshd processes of simulated VMs still alive: {live}"


@pytest.fixture
def opennebula_sim() -> Iterator[OpenNebulaSimulator]:
    sim = OpenNebulaSimulator(users={"rain": "one-secret"})
    sim.ssh_port = free_ssh_port()
    sim.sshd_delay = 0.3
    sim.start()
    yield sim
    undeleted = [f"VM {vm.id}" for vm in sim.vms.values() if vm.state != 6]
    sim.stop()
    _check_no_vm_left(sim.machines, undeleted)


@pytest.fixture
def opennebula_builders_file(opennebula_sim: OpenNebulaSimulator, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> BuildersFile:
    monkeypatch.setenv(ONE_PASSWORD_ENV, "one-secret")
    path = tmp_path / "builders.yaml"
    file = BuildersFile(path, "opennebula", {"opennebula": {
        "endpoint": opennebula_sim.endpoint, "username": "rain", "password_env": ONE_PASSWORD_ENV,
        "image_id": 7, "network_id": 0, "ssh_port": opennebula_sim.ssh_port,
        "boot_timeout": 15, "poll_interval": 0.1}})
    file.update()
    return file


@pytest.fixture
def opennebula_builder_env(settings: Settings,
                           opennebula_builders_file: BuildersFile) -> Iterator[tuple[Settings, Any]]:
    env = settings.with_overrides(builders_file=str(opennebula_builders_file.path))
    yield env, open_store(env, "admin")


@pytest.fixture
def openstack_sim() -> Iterator[OpenStackSimulator]:
    sim = OpenStackSimulator(username="rain", password="os-secret", project="builds")
    sim.ssh_port = free_ssh_port()
    sim.sshd_delay = 0.3
    sim.add_image("rain-builder")
    sim.start()
    yield sim
    undeleted = [f"server {sid}" for sid in sim.servers] + [f"keypair {k}" for k in sim.keypairs]
    sim.stop()
    _check_no_vm_left(sim.machines, undeleted)


@pytest.fixture
def openstack_builders_file(openstack_sim: OpenStackSimulator, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> BuildersFile:
    monkeypatch.setenv(OS_PASSWORD_ENV, "os-secret")
    path = tmp_path / "builders.yaml"
    file = BuildersFile(path, "openstack", {"openstack": {
        "auth_url": openstack_sim.auth_url, "username": "rain", "password_env": OS_PASSWORD_ENV,
        "project_name": "builds", "image": "rain-builder", "flavor": "m1.medium", "network": "build-net",
        "ssh_port": openstack_sim.ssh_port, "boot_timeout": 15, "poll_interval": 0.1}})
    file.update()
    return file


@pytest.fixture
def openstack_builder_env(settings: Settings,
                          openstack_builders_file: BuildersFile) -> Iterator[tuple[Settings, Any]]:
    env = settings.with_overrides(builders_file=str(openstack_builders_file.path))
    yield env, open_store(env, "admin")
