"""Nova as Rain's builders and launches use it: python-novaclient on Rain's Keystone session, its errors as Rain's.

    nova = Nova(conf, log_in(conf), BuildError)   # or TargetError for launches
    client = nova.client()                        # one per thread: novaclient's look-ups are not thread-safe
    flavor = nova.lookup("flavor", conf.flavor, lambda v: find_flavor(client, v))
    ip = nova.wait_active(client, server.id, deadline, interval, network=conf.network)
    nova.delete(client.servers, "server", server.id)   # missing counts as deleted
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from novaclient import client as nova_client
from novaclient import exceptions as nova_exc

from rain.clouds.openstack import KeystoneAuth, Login, keystone_errors, refused
from rain.errors import ConfigError, RainError, one_line
from rain.waiting import Deadline, Pending, wait_for

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


class Nova:
    """One site's compute API: failures are `failure` (BuildError, TargetError), hints name the site's file."""

    def __init__(self, conf: KeystoneAuth, login: Login, failure: type[RainError]) -> None:
        self.conf, self.login, self.failure = conf, login, failure

    def client(self) -> Any:  # Any: python-novaclient ships no type hints
        return nova_client.Client("2.1", session=self.login.session(),
                                  region_name=self.login.region, endpoint_type=self.login.interface)

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """novaclient / keystoneauth failures → Rain errors naming what was being done."""
        try:
            with keystone_errors(self.conf, what, self.failure):
                yield
        except nova_exc.Unauthorized as e:
            raise refused(self.conf, what, e) from e
        except nova_exc.Forbidden as e:
            raise self.failure(f"OpenStack refused {what}: {one_line(e)}",
                               hint=f"the user needs a role that allows it in the project of the "
                                    f"{self.conf.settings_file}") from e
        except nova_exc.ClientException as e:
            raise self.failure(f"OpenStack {what} failed: {one_line(e)}") from e

    def lookup(self, kind: str, value: str, find: Callable[[str], Any]) -> Any:
        """find(value), with a missing or ambiguous name as a ConfigError naming the setting."""
        try:
            with self.errors(f"looking up {kind} {value!r}"):
                return find(value)
        except RainError as e:
            if isinstance(e.__cause__, (nova_exc.NotFound, nova_exc.NoUniqueMatch)):
                raise ConfigError(f"OpenStack {kind} {value!r}: {one_line(e.__cause__)}",
                                  hint=f"set {kind} in the {self.conf.settings_file} to an existing name or id") from e
            raise

    def wait_active(self, client: Any, server_id: str, deadline: Deadline, interval: float,
                    network: str | None, timeout_hint: str) -> str:
        """The ACTIVE server's IPv4 address: floating, else on `network`, else any. `timeout_hint` says
        how to give it more time."""
        def active() -> str | Pending:
            with self.errors(f"reading server {server_id}"):
                server = client.servers.get(server_id)
            status = str(server.status)
            if status == "ERROR":
                fault = (getattr(server, "fault", None) or {}).get("message") or "no fault message"
                raise self.failure(f"OpenStack server {server_id} went to ERROR: {one_line(fault)}",
                                   hint=f"check image, flavor and network in the {self.conf.settings_file} and "
                                        "the cloud's capacity")
            if status != "ACTIVE":
                return Pending(status)
            return self._address(server_id, server.addresses or {}, network)

        return wait_for(active, deadline, interval, lambda status: self.failure(
            f"OpenStack server {server_id} still {status} after {deadline.seconds:.0f}s",
            hint=f"the cloud may be slow or full; {timeout_hint}"))

    def _address(self, server_id: str, addresses: dict[str, list[dict[str, Any]]], network: str | None) -> str:
        v4 = [(net, a) for net, items in addresses.items() for a in items if a.get("version") == 4]
        for wanted in (lambda net, a: a.get("OS-EXT-IPS:type") == "floating",
                       lambda net, a: net == network, lambda net, a: True):
            for net, a in v4:
                if wanted(net, a):
                    return str(a["addr"])
        raise self.failure(f"OpenStack server {server_id} is ACTIVE without an IPv4 address",
                           hint=f"check network in the {self.conf.settings_file}")

    def delete(self, manager: Any, what: str, name: str) -> None:
        """Delete `name` through novaclient's `manager` (servers, keypairs); missing counts as deleted."""
        with self.errors(f"deleting {what} {name}"):
            try:
                manager.delete(name)
            except nova_exc.NotFound:
                pass


def find_flavor(client: Any, value: str) -> Any:
    try:
        return client.flavors.get(value)
    except nova_exc.NotFound:
        return client.flavors.find(name=value)


def network_id(client: Any, value: str) -> str:
    if UUID_RE.fullmatch(value):
        return value
    return str(client.neutron.find_network(value).id)
