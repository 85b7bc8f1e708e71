"""The builders the tests build on: the cloud SIMULATORS with real-sshd VMs, and the real qemu builder image.

Neither OpenNebula nor Nova can run here, so the opennebula provider talks to
simulators/opennebula.py (XML-RPC) and the openstack provider to the real
Keystone and Glance (openstack_cloud.py: it logs in there and finds its
builder image in Glance) and to simulators/nova.py for Nova and the one
Neutron look-up, which the fixture lists in the real Keystone's catalog. Each
simulated VM is a real OpenSSH sshd on its own 127.0.0.N (simulators/sshvm.py),
so the Machine a provider returns is a real SSH endpoint where commands run on
this host as root.

The qemu builder is the real builder image: the recipe shipped with Rain (qemu.builder_recipe())
built by the real `fg-image generate` (tar.zst, no upload) in the test cache
(built_images.cache_dir(), shared with the register e2e images), so generate's own
result cache reuses it while the recipe is unchanged. Its boot bundle is prepared
there as well, under an id derived from the archive's sha256: every session,
and every test, boots the same bundle without a repository round trip (a
prepared bundle is used as is when the builders file names its id).

Fixtures (a conftest.py imports the ones its tree uses):
- `opennebula_sim`, `openstack_sim`: the running simulator (fault knobs: `vm_fault`);
  teardown fails the test if a VM was left undeleted or any of its sshd processes lives on.
  `openstack_sim` is the NovaSimulator, in the catalog of the session's real Keystone
  (`openstack_cloud`, which a conftest.py must import too) while the test runs, with
  the builder image "rain-builder" (a 16 MiB qcow2, alice's, project rain) in the real
  Glance; both leave at teardown.
- `opennebula_builders_file`, `openstack_builders_file`: the builders file the env points at;
  `.update(**changes)` rewrites that provider's section.
- `opennebula_builder_env`, `openstack_builder_env`: `(settings, repo)` such that
  `get_builder(name, settings, repo)` / `get_provider(...)` use the running simulator.
- `qemu_bundle` (session): (image id, builders file) for the qemu builder's bundle.
- `qemu_builder_env`: (settings, repo) for `get_builder("qemu", settings, repo)`,
  with the test's own data dir and database (`rain_env`).
- `qemu_settings(**qemu)`: settings whose builders file adds keys to the qemu section.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rain.config import Settings, load_settings
from rain.generate.builders.qemu import builder_recipe
from rain.repository.connect import open_store
from support import built_images
from support.cli import FG_IMAGE
from support.openstack_cloud import Cloud, password
from support.simulators.nova import NovaSimulator
from support.simulators.opennebula import OpenNebulaSimulator

ONE_PASSWORD_ENV, OS_PASSWORD_ENV = "RAIN_TEST_ONE_BUILDER_PASSWORD", "RAIN_TEST_OS_BUILDER_PASSWORD"
OS_USER, BUILDER_IMAGE = "alice", "rain-builder"
"""The openstack builders file logs in as alice (project rain) and boots the image named rain-builder."""


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
def openstack_sim(openstack_cloud: Cloud, tmp_path: Path) -> Iterator[NovaSimulator]:
    disk = tmp_path / "rain-builder.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    image_id = openstack_cloud.upload_image(BUILDER_IMAGE, disk, OS_USER)
    sim = NovaSimulator(openstack_cloud.keystone, openstack_cloud.glance, openstack_cloud.token)
    sim.ssh_port = free_ssh_port()
    sim.sshd_delay = 0.3
    sim.start()
    try:
        with openstack_cloud.endpoints("compute", "nova", sim.compute_url), \
                openstack_cloud.endpoints("network", "neutron", sim.network_url):
            yield sim
        undeleted = [f"server {sid}" for sid in sim.servers] + [f"keypair {k}" for _, k in sim.keypairs]
    finally:
        sim.stop()
        openstack_cloud.delete_image(image_id)
    _check_no_vm_left(sim.machines, undeleted)


@pytest.fixture
def openstack_builders_file(openstack_sim: NovaSimulator, openstack_cloud: Cloud, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> BuildersFile:
    monkeypatch.setenv(OS_PASSWORD_ENV, password(OS_USER))
    path = tmp_path / "builders.yaml"
    file = BuildersFile(path, "openstack", {"openstack": {
        "auth_url": openstack_cloud.keystone, "username": OS_USER, "password_env": OS_PASSWORD_ENV,
        "project_name": "rain", "image": BUILDER_IMAGE, "flavor": "m1.medium", "network": "build-net",
        "ssh_port": openstack_sim.ssh_port, "boot_timeout": 15, "poll_interval": 0.1}})
    file.update()
    return file


@pytest.fixture
def openstack_builder_env(settings: Settings,
                          openstack_builders_file: BuildersFile) -> Iterator[tuple[Settings, Any]]:
    env = settings.with_overrides(builders_file=str(openstack_builders_file.path))
    yield env, open_store(env, "admin")


# The qemu builder

BUILDER_RECIPE = builder_recipe()


def cache_dir() -> Path:
    """The qemu builder's part of the test cache: its generated image and prepared bundles."""
    path = built_images.cache_dir() / "qemu-builder"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_builder_archive() -> tuple[Path, str]:
    """(tar.zst, sha256) of the builder image, rebuilt only when the recipe or the build changed."""
    out = cache_dir() / "generated"
    # the same data dir and lock as the register tests' images (built_images.py): one
    # bookworm base system bootstrapped for all of them
    env = {**os.environ, "RAIN_DATA_DIR": str(cache_dir().parent / "generate-data")}
    with open(cache_dir().parent / ".generated.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        subprocess.run([str(FG_IMAGE), "generate", str(BUILDER_RECIPE), "--format", "tar.zst", "--no-upload",
                        "-o", str(out)], check=True, stdin=subprocess.DEVNULL, env=env)
    manifest = json.loads((out / "manifest.json").read_text())
    return out / "rain-builder-debian.tar.zst", manifest["artifacts"][0]["sha256"]


def write_builders_file(path: Path, image_id: str, **qemu: Any) -> Path:
    section = {"image": image_id, "cache_dir": str(cache_dir() / "bundles"), **qemu}
    path.write_text(yaml.safe_dump({"qemu": section}))
    return path


@pytest.fixture(scope="session")
def qemu_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from rain.generate.builders.qemu import QemuProvider

    archive, sha256 = build_builder_archive()
    image_id = sha256[:12]
    tmp = tmp_path_factory.mktemp("qemu-bundle")
    builders = write_builders_file(tmp / "builders.yaml", image_id)
    settings = load_settings(environ={"RAIN_DATA_DIR": str(tmp / "data"), "RAIN_CONFIG": str(tmp / "absent.toml"),
                                      "RAIN_BUILDERS_FILE": str(builders)})
    QemuProvider(settings, None).prepare(image_id, archive=archive)
    os.utime(cache_dir() / "bundles" / image_id)  # in use: see prune_bundles
    prune_bundles(keep=image_id)
    return image_id, builders


def prune_bundles(keep: str, age: float = 3600) -> None:
    """Bundles of earlier builder images (~1 GB each) go once no session has started with them for an hour."""
    for d in (cache_dir() / "bundles").iterdir():
        if len(d.name) == 12 and d.name != keep and time.time() - d.stat().st_mtime > age:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def qemu_settings(rain_env: dict[str, str], qemu_bundle: tuple[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """qemu_settings(**qemu) → Settings of this test whose builders file sets those qemu keys too."""
    def make(**qemu: Any) -> Settings:
        path = write_builders_file(tmp_path / "builders.yaml", qemu_bundle[0], **qemu)
        return load_settings(environ={**rain_env, "RAIN_BUILDERS_FILE": str(path)})
    return make


@pytest.fixture
def qemu_builder_env(qemu_settings: Any) -> Iterator[tuple[Settings, Any]]:
    from rain.repository.connect import open_repository

    settings = qemu_settings()
    yield settings, open_repository(settings)


def qemu_pids(marker: str) -> list[int]:
    """Live qemu processes whose command line mentions marker (a test's own directory)."""
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{marker}"], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]
