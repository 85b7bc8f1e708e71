"""OpenStackProvider: builder VMs as Nova servers, through python-novaclient on Rain's Keystone session
(rain.clouds.openstack: the login, and keystoneauth1's errors as Rain's).

For each machine Rain imports a key pair holding its client public key
(root's authorized key via cloud-init; the image needs `disable_root: false`,
which the user-data also sets) and boots `image` with `flavor` on `network`,
passing cloud-config user-data that makes the server's Ed25519 host key the
one Rain generated:

    #cloud-config
    disable_root: false
    ssh_deletekeys: true
    ssh_keys: {ed25519_private: ..., ed25519_public: ...}

It polls the server until ACTIVE (ERROR fails with Nova's fault message),
takes its address (a floating IPv4 if it has one, else its fixed IPv4 on
`network`), and waits for sshd there with that host key pinned
(launch.wait_for_sshd). Releasing deletes the server and the key pair; a
failure during launch does the same. A lease (leases.py) names both while they
exist, so the next run deletes them when fg-image was killed outright.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rain.clouds.leases import Lease, build_leases, reap_builds
from rain.clouds.nova import Nova, find_flavor, network_id
from rain.clouds.openstack import KeystoneAuth, log_in
from rain.config import Settings
from rain.errors import BuildError
from rain.generate.builders.launch import kept_login, undo_on_failure, wait_for_sshd
from rain.generate.builders.machine import Machine
from rain.generate.builders.settings import ProviderSettings, provider_settings
from rain.host.ssh import MachineKeys
from rain.progress import Reporter
from rain.repository.base import Repository
from rain.waiting import Deadline

log = logging.getLogger(__name__)


class OpenStackBuilderSettings(ProviderSettings, KeystoneAuth):
    settings_file: ClassVar[str] = "builders file"
    image: str
    """The builder image (Glance name or id)."""
    flavor: str
    """Flavor name or id."""
    network: str
    """Network name or id; this host must reach the server's address on it (or its floating IP)."""
    ssh_port: int = 22
    poll_interval: float = 2.0


def user_data(keys: MachineKeys) -> str:
    """cloud-config that installs Rain's host key and lets root in with the key pair's key."""
    config = {"disable_root": False, "ssh_deletekeys": True,
              "ssh_keys": {"ed25519_private": keys.host.private_openssh,
                           "ed25519_public": keys.host.public_line}}
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


class OpenStackProvider:
    name = "openstack"

    def __init__(self, settings: Settings, repo: Repository | None = None) -> None:
        self.conf: OpenStackBuilderSettings = provider_settings(settings, "openstack", OpenStackBuilderSettings)
        self.limit = self.conf.limit
        self.kept = settings.data_path / "builders" / "openstack" / "kept"
        """--on-error keep: the login keys of machines left running."""
        self.leases = build_leases(settings.data_path, "openstack")
        self.nova = Nova(self.conf, log_in(self.conf), BuildError)

    def reap(self) -> list[str]:
        """Delete the servers and key pairs of builds whose fg-image was killed (leases.py)."""
        if not self.leases.stale():
            return []
        nova = self._nova()
        return reap_builds(self.leases, "OpenStack", lambda ids: self._releaser(nova, dict(ids))())

    def _nova(self) -> Any:  # Any: python-novaclient ships no type hints
        """A client for one machine: novaclient's name look-ups switch the client's service type
        while they run, so clients are not shared between the pool's threads (the token is)."""
        return self.nova.client()

    def launch(self, build_name: str, keys: MachineKeys, workdir: Path, reporter: Reporter | None = None) -> Machine:
        s = self.conf
        deadline = Deadline.after(s.boot_timeout)
        nova = self._nova()
        image = self.nova.lookup("image", s.image, nova.glance.find_image)
        flavor = self.nova.lookup("flavor", s.flavor, lambda v: find_flavor(nova, v))
        net_id = self.nova.lookup("network", s.network, lambda v: network_id(nova, v))
        name = "rain-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", build_name)[:40] + "-" + uuid.uuid4().hex[:8]
        for line in self.reap():
            (reporter.info if reporter else log.warning)(line)
        made: dict[str, str] = {}
        lease = self.leases.take(name)
        release = self._releaser(nova, made, lease)
        with undo_on_failure(release, f"OpenStack server {name}"):
            lease.record(keypair=name)  # before it exists: a kill during the call must not lose it
            with self.nova.errors("importing the key pair"):
                nova.keypairs.create(name, public_key=keys.client.public_line)
            made["keypair"] = name
            with self.nova.errors("creating the server"):
                server = nova.servers.create(name, image, flavor, key_name=name, userdata=user_data(keys),
                                             nics=[{"net-id": net_id}], meta={"rain-build": build_name})
            made["server"] = server.id
            lease.record(server=server.id)
            what = f"OpenStack server {server.id}"
            ip = self.nova.wait_active(nova, server.id, deadline, s.poll_interval, s.network,
                                       "raise boot_timeout in the builders file")
            log.info("%s is ACTIVE at %s; waiting for its sshd", what, ip)
            wait_for_sshd(what, ip, s.ssh_port, keys, deadline, interval=min(1.0, s.poll_interval))

        def keep() -> str:
            lease.drop()  # the user's machine now, not a leftover for reap
            return (f"{what} left running: {kept_login(self.kept / server.id, ip, s.ssh_port, keys)}; remove it "
                    f"with 'openstack server delete {server.id}; openstack keypair delete {name}'")

        return Machine(name=f"openstack-server-{server.id}", host=ip, port=s.ssh_port, keys=keys,
                       release=release, keep=keep)

    def _releaser(self, nova: Any, made: dict[str, str], lease: Lease | None = None) -> Callable[[], None]:
        def release() -> None:
            # the server first, then the key pair it was made with
            for kind, what, manager in (("server", "server", nova.servers), ("keypair", "key pair", nova.keypairs)):
                if name := made.get(kind):
                    self.nova.delete(manager, what, name)
                    made.pop(kind)
                    log.info("OpenStack %s %s deleted", what, name)
            if lease is not None:
                lease.drop()

        return release
