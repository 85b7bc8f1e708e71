"""The openstack launch site: Nova servers from the image as Rain registered it in Glance.

Rain imports the launch's public key as a key pair `rain-launch-TAG` (cloud-init gives it to the
image's default user) and creates each server `rain-TAG-nodeI` from the Glance image with the flavor
(`--size`, else the site's `flavor`) on the site's `network`, with metadata `rain-launch: TAG` and
cloud-config user-data holding the server's host key (cloud.py). Its address is a floating IPv4 if
it has one, else its fixed one on `network`. Releasing deletes the servers Nova lists by the launch's
name and tag, and the key pair.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from rain.clouds.nova import Nova, find_flavor, network_id
from rain.clouds.openstack import log_in
from rain.errors import TargetError
from rain.host.ssh import KeyPair
from rain.launch.cloud import META, CloudSite
from rain.launch.fleet import cloud_config
from rain.register.targets.openstack import OpenStackSite
from rain.waiting import Deadline

log = logging.getLogger(__name__)


class OpenStackLaunch(CloudSite):
    target: ClassVar[str] = "openstack"
    cloud: ClassVar[str] = "OpenStack server"
    size_setting: ClassVar[str] = "flavor"

    def __init__(self, site: OpenStackSite, site_name: str, user: str, size: str | None = None) -> None:
        super().__init__(site_name, user, site.ssh_port, size or site.flavor)
        self.site = site
        self.nova = Nova(site, log_in(site), TargetError)
        self._client: Any = None
        self._flavor: Any = None
        self._nics: list[dict[str, str]] | None = None

    def check(self, count: int) -> None:
        """Also the flavor and the network, looked up now: before a registration that may take minutes."""
        super().check(count)
        if self._flavor is not None:  # looked up already (the CLI checks before machines() does)
            return
        client = self._nova()
        assert self.size is not None
        self._flavor = self.nova.lookup("flavor", self.size, lambda v: find_flavor(client, v))
        if self.site.network:
            self._nics = [{"net-id": self.nova.lookup("network", self.site.network,
                                                      lambda v: network_id(client, v))}]

    def _nova(self) -> Any:
        if self._client is None:
            self._client = self.nova.client()
        return self._client

    def _begin(self, tag: str, key: KeyPair) -> None:
        with self.nova.errors("importing the launch's key pair"):
            self._nova().keypairs.create(f"rain-launch-{tag}", public_key=key.public_line)

    def _create(self, name: str, image_ref: str, tag: str, key: KeyPair, host_key: KeyPair) -> str:
        with self.nova.errors(f"creating server {name}"):
            server = self._nova().servers.create(name, image_ref, self._flavor, key_name=f"rain-launch-{tag}",
                                                 nics=self._nics, userdata=cloud_config(host_key),
                                                 meta={META: tag})
        return str(server.id)

    def _wait_running(self, remote_id: str, deadline: Deadline) -> str:
        return str(self.nova.wait_active(self._nova(), remote_id, deadline, self.site.poll_interval,
                                         self.site.network, "give --boot-timeout more seconds"))

    def _release(self, tag: str, known: list[str]) -> int:
        client = self._nova()
        with self.nova.errors("listing the launch's servers"):
            listed = client.servers.list(search_opts={"name": f"^rain-{tag}-"})
        servers = set(known) | {str(s.id) for s in listed if (getattr(s, "metadata", None) or {}).get(META) == tag}
        for server_id in sorted(servers):
            self.nova.delete(client.servers, "server", server_id)
            log.info("OpenStack server %s deleted", server_id)
        self.nova.delete(client.keypairs, "key pair", f"rain-launch-{tag}")
        return len(servers)
