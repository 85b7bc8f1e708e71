"""The openstack launch site: N Nova servers from the image as Rain registered it in Glance.

For a launch Rain imports the launch's public key as a key pair `rain-launch-TAG` (cloud-init gives it
to the image's default user) and creates each server `rain-TAG-nodeI` from the Glance image with the
flavor (`--size`, else the site's `flavor`) on the site's `network`, with metadata `rain-launch: TAG`
and cloud-config user-data that makes the server's Ed25519 host key the one Rain made for it (and no
other: Rain logs in only to a machine that shows it). Once every server is ACTIVE the launch is
recorded (`started`); then Rain waits until each lets the user in over SSH on its address (a floating
IPv4 if it has one, else its fixed one on `network`). The machines file lists the addresses.

Leaving the block deletes every server and the key pair, also on failure and Ctrl-C (a server whose
create call Ctrl-C cut short too: Rain lists the project's servers by the launch's name and tag),
unless the fleet is kept (--detach). `release(launch)` does the same for a record, later: it deletes
only servers named and tagged with the record's TAG, so a rewritten record cannot steer it at others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rain.clouds.nova import Nova, find_flavor, network_id
from rain.clouds.openstack import log_in
from rain.config import Settings
from rain.errors import InvalidInput, RainError, TargetError, one_line
from rain.host.ssh import KeyPair
from rain.launch.fleet import Fleet, Machine, check_count, drop_work, keep_work, work_dir
from rain.register import seeds, vm
from rain.register.targets.openstack import OpenStackSite
from rain.repository.models import Launch
from rain.waiting import Deadline

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"^[0-9a-f]{8}$")
META = "rain-launch"


class OpenStackLaunch:
    """Servers of one site (the targets file's openstack section) that let `user` in with the launch's key."""

    def __init__(self, site: OpenStackSite, site_name: str, user: str, size: str | None = None,
                 settings: Settings | None = None) -> None:
        self.site, self.site_name, self.user = site, site_name, user
        self.size = size or site.flavor
        self.nova = Nova(site, log_in(site), TargetError)

    def check(self, count: int) -> None:
        check_count(count)
        if not self.size:
            raise InvalidInput(f"no size for the machines on openstack site {self.site_name!r}",
                               hint="give --size FLAVOR, or set flavor for the site in the targets file")

    @contextlib.contextmanager
    def machines(self, count: int, key: KeyPair, timeout: float, image_ref: str, prefix: str = "node",
                 report: Callable[[str], None] = lambda _: None,
                 started: Callable[[Fleet], None] = lambda _: None) -> Iterator[Fleet]:
        """`count` servers of Glance image `image_ref`, each answering SSH (see the module's doc)."""
        self.check(count)
        assert self.size is not None
        tag = uuid.uuid4().hex[:8]
        keypair = f"rain-launch-{tag}"
        client = self.nova.client()
        flavor = self.nova.lookup("flavor", self.size, lambda v: find_flavor(client, v))
        nics = None
        if self.site.network:
            nics = [{"net-id": self.nova.lookup("network", self.site.network, lambda v: network_id(client, v))}]
        kept = False
        servers: list[tuple[str, KeyPair, str]] = []  # (server id, its host key, its name)
        work = work_dir()

        def keep() -> None:
            nonlocal kept
            keep_work(work)
            kept = True

        try:
            start = time.monotonic()
            deadline = Deadline(start + timeout, timeout)
            with self.nova.errors("importing the launch's key pair"):
                client.keypairs.create(keypair, public_key=key.public_line)
            for i in range(1, count + 1):
                name = seeds.hostname(f"rain-{tag}-{prefix}{i}")
                host_key = KeyPair.generate(f"rain-host@{name}")
                with self.nova.errors(f"creating server {name}"):
                    server = client.servers.create(name, image_ref, flavor, key_name=keypair, nics=nics,
                                                   userdata=_cloud_config(host_key), meta={META: tag})
                servers.append((str(server.id), host_key, name))
                report(f"{name}: created (server {server.id})")
            machines = []
            for server_id, host_key, name in servers:
                address = self.nova.wait_active(client, server_id, deadline, self.site.poll_interval,
                                                self.site.network, "give --boot-timeout more seconds")
                machines.append(Machine(name, address, address, self.site.ssh_port, host_key, server_id, address))
                report(f"{name}: ACTIVE at {address}")
            fleet = Fleet(machines, work, keep, {"keypair": keypair, "tag": tag})
            started(fleet)
            for m in machines:
                vm.wait_for_login(None, m.port, self.user, key, None, deadline, host_key=m.host_key.public_blob,
                                  what=f"machine {m.name}", host=m.host,
                                  hint=f"{m.where_to_look()}; the image must take the host key and the key pair "
                                       "from cloud-init, and this host must reach the server's address")
                report(f"{m.name}: answers SSH after {time.monotonic() - start:.0f}s")
            yield fleet
        except BaseException:
            if kept:
                raise
            try:  # also a server whose create Ctrl-C cut short: Nova made it, Rain never heard its id
                self._delete(client, self._servers_of(client, tag) | {server_id for server_id, _, _ in servers},
                             keypair)
            except RainError as e:  # the launch's own error is the one to tell
                log.warning("could not delete launch %s's servers: %s", tag, one_line(e))
            finally:
                drop_work(work)
            raise
        if not kept:
            try:
                self._delete(client, self._servers_of(client, tag) | {server_id for server_id, _, _ in servers},
                             keypair)
            finally:
                drop_work(work)

    def release(self, launch: Launch) -> int:
        """Delete a recorded launch's servers (by its tag: named rain-TAG-*, metadata naming TAG) and key pair."""
        tag = str(launch.detail.get("tag", ""))
        if not TAG_RE.match(tag):
            return 0
        client = self.nova.client()
        mine = self._servers_of(client, tag)
        self._delete(client, mine, f"rain-launch-{tag}")
        return len(mine)

    def _servers_of(self, client: Any, tag: str) -> set[str]:
        """The ids of this project's servers a launch tagged `tag` made."""
        with self.nova.errors("listing the launch's servers"):
            found = client.servers.list(search_opts={"name": f"^rain-{tag}-"})
        return {str(s.id) for s in found if (getattr(s, "metadata", None) or {}).get(META) == tag}

    def _delete(self, client: Any, server_ids: Iterable[str], keypair: str) -> None:
        for server_id in server_ids:
            self.nova.delete(client.servers, "server", server_id)
            log.info("OpenStack server %s deleted", server_id)
        self.nova.delete(client.keypairs, "key pair", keypair)


def _cloud_config(host_key: KeyPair) -> str:
    """The server's host key, and no other (the key pair's key reaches the default user by Nova's metadata)."""
    config = {"ssh_deletekeys": True, "ssh_genkeytypes": [],
              "ssh_keys": {"ed25519_private": host_key.private_openssh,
                           "ed25519_public": seeds.public_key(host_key.public_line)}}
    return "#cloud-config\n" + json.dumps(config) + "\n"
