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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import yaml
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc

from rain.clouds.openstack import KeystoneAuth, keystone_errors, log_in, refused
from rain.config import Settings
from rain.errors import BuildError, ConfigError, one_line
from rain.generate.builders.launch import kept_login, undo_on_failure, wait_for_sshd
from rain.generate.builders.leases import Lease, Leases, reap
from rain.generate.builders.machine import Machine
from rain.generate.builders.settings import ProviderSettings, provider_settings
from rain.host.ssh import MachineKeys
from rain.progress import Reporter
from rain.repository.base import Repository
from rain.waiting import Deadline, Pending, wait_for

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
        self.leases = Leases(settings.data_path / "builders" / "openstack" / "leases")
        self._login = log_in(self.conf)

    def reap(self) -> list[str]:
        """Delete the servers and key pairs of builds whose fg-image was killed (leases.py)."""
        if not self.leases.stale():
            return []
        nova = self._nova()
        return reap(self.leases, "OpenStack", lambda ids: self._releaser(nova, dict(ids))())

    def _nova(self) -> Any:  # Any: python-novaclient ships no type hints
        """A client for one machine: novaclient's name look-ups switch the client's service type
        while they run, so clients are not shared between the pool's threads (the token is)."""
        return nova_client.Client("2.1", session=self._login.session(),
                                  region_name=self._login.region, endpoint_type=self._login.interface)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """novaclient / keystoneauth failures → Rain errors naming what was being done."""
        try:
            with keystone_errors(self.conf, what, BuildError):
                yield
        except nova_exc.Unauthorized as e:
            raise refused(self.conf, what, e) from e
        except nova_exc.Forbidden as e:
            raise BuildError(f"OpenStack refused {what}: {one_line(e)}",
                             hint="the user needs a role that allows it in the project of the builders file") from e
        except nova_exc.ClientException as e:
            raise BuildError(f"OpenStack {what} failed: {one_line(e)}") from e

    def _lookup(self, kind: str, value: str, find: Callable[[str], Any]) -> Any:
        """find(value), with a missing or ambiguous name as a ConfigError naming the setting."""
        try:
            with self._errors(f"looking up {kind} {value!r}"):
                return find(value)
        except BuildError as e:
            if isinstance(e.__cause__, (nova_exc.NotFound, nova_exc.NoUniqueMatch)):
                raise ConfigError(f"OpenStack {kind} {value!r}: {one_line(e.__cause__)}",
                                  hint=f"set {kind} in the builders file to an existing name or id") from e
            raise

    @staticmethod
    def _flavor(nova: Any, value: str) -> Any:
        try:
            return nova.flavors.get(value)
        except nova_exc.NotFound:
            return nova.flavors.find(name=value)

    @staticmethod
    def _network_id(nova: Any, value: str) -> str:
        if re.fullmatch(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}", value):
            return value
        return str(nova.neutron.find_network(value).id)

    def launch(self, build_name: str, keys: MachineKeys, workdir: Path, reporter: Reporter | None = None) -> Machine:
        s = self.conf
        deadline = Deadline.after(s.boot_timeout)
        nova = self._nova()
        image = self._lookup("image", s.image, nova.glance.find_image)
        flavor = self._lookup("flavor", s.flavor, lambda v: self._flavor(nova, v))
        net_id = self._lookup("network", s.network, lambda v: self._network_id(nova, v))
        name = "rain-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", build_name)[:40] + "-" + uuid.uuid4().hex[:8]
        for line in self.reap():
            (reporter.info if reporter else log.warning)(line)
        made: dict[str, str] = {}
        lease = self.leases.take(name)
        release = self._releaser(nova, made, lease)
        with undo_on_failure(release, f"OpenStack server {name}"):
            lease.record(keypair=name)  # before it exists: a kill during the call must not lose it
            with self._errors("importing the key pair"):
                nova.keypairs.create(name, public_key=keys.client.public_line)
            made["keypair"] = name
            with self._errors("creating the server"):
                server = nova.servers.create(name, image, flavor, key_name=name, userdata=user_data(keys),
                                             nics=[{"net-id": net_id}], meta={"rain-build": build_name})
            made["server"] = server.id
            lease.record(server=server.id)
            what = f"OpenStack server {server.id}"
            ip = self._wait_active(nova, server.id, deadline)
            log.info("%s is ACTIVE at %s; waiting for its sshd", what, ip)
            wait_for_sshd(what, ip, s.ssh_port, keys, deadline, interval=min(1.0, s.poll_interval))

        def keep() -> str:
            lease.drop()  # the user's machine now, not a leftover for reap
            return (f"{what} left running: {kept_login(self.kept / server.id, ip, s.ssh_port, keys)}; remove it "
                    f"with 'openstack server delete {server.id}; openstack keypair delete {name}'")

        return Machine(name=f"openstack-server-{server.id}", host=ip, port=s.ssh_port, keys=keys,
                       release=release, keep=keep)

    def _wait_active(self, nova: Any, server_id: str, deadline: Deadline) -> str:
        """The ACTIVE server's address."""
        def active() -> str | Pending:
            with self._errors(f"reading server {server_id}"):
                server = nova.servers.get(server_id)
            status = str(server.status)
            if status == "ERROR":
                fault = (getattr(server, "fault", None) or {}).get("message") or "no fault message"
                raise BuildError(f"OpenStack server {server_id} went to ERROR: {one_line(fault)}",
                                 hint="check image, flavor and network in the builders file and the "
                                      "cloud's capacity")
            if status != "ACTIVE":
                return Pending(status)
            return self._address(server_id, server.addresses or {})

        return wait_for(active, deadline, self.conf.poll_interval, lambda status: BuildError(
            f"OpenStack server {server_id} still {status} after {deadline.seconds:.0f}s",
            hint="the cloud may be slow or full; raise boot_timeout in the builders file"))

    def _address(self, server_id: str, addresses: dict[str, list[dict[str, Any]]]) -> str:
        v4 = [(net, a) for net, items in addresses.items() for a in items if a.get("version") == 4]
        for wanted in (lambda net, a: a.get("OS-EXT-IPS:type") == "floating",
                       lambda net, a: net == self.conf.network, lambda net, a: True):
            for net, a in v4:
                if wanted(net, a):
                    return str(a["addr"])
        raise BuildError(f"OpenStack server {server_id} is ACTIVE without an IPv4 address",
                         hint="check network in the builders file")

    def _releaser(self, nova: Any, made: dict[str, str], lease: Lease | None = None) -> Callable[[], None]:
        def release() -> None:
            # the server first, then the key pair it was made with
            for kind, what, manager in (("server", "server", nova.servers), ("keypair", "key pair", nova.keypairs)):
                if name := made.get(kind):
                    with self._errors(f"deleting {what} {name}"):
                        try:
                            manager.delete(name)
                        except nova_exc.NotFound:
                            pass
                    made.pop(kind)
                    log.info("OpenStack %s %s deleted", what, name)
            if lease is not None:
                lease.drop()

        return release
