"""The opennebula launch site: VMs (one.vm.allocate) from the image as Rain registered it in a datastore.

Each VM `rain-TAG-nodeI` gets CPUS and MEMORY (`--size CPUSxMiB`, else the site's `size`), the image as
its disk, a NIC on the site's `network_id`, the attribute RAIN_LAUNCH = TAG, and a CONTEXT that
cloud-init's OpenNebula datasource reads: NETWORK, SET_HOSTNAME, SSH_PUBLIC_KEY (the launch's key, for
the image's login user) and USER_DATA (base64 cloud-config holding the VM's host key; cloud.py). Its
address is its first NIC's. Releasing terminates (hard) the VMs one.vmpool.infoextended lists by the
launch's name and tag (one.vmpool.info's short bodies leave the user template's attributes out).
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Any, ClassVar

from rain.clouds.opennebula import DONE, OneClient, Template, render_template, terminate, wait_running
from rain.errors import InvalidInput, TargetError
from rain.host.ssh import KeyPair
from rain.launch.cloud import CloudSite
from rain.launch.fleet import cloud_config
from rain.register.targets.opennebula import OpenNebulaSite
from rain.waiting import Deadline

log = logging.getLogger(__name__)

SIZE_RE = re.compile(r"^([1-9][0-9]{0,2})x([1-9][0-9]{2,7})$")
TAG_ATTRIBUTE = "RAIN_LAUNCH"
MINE = -3
"""one.vmpool.infoextended's filter for the VMs the caller owns."""


class OpenNebulaLaunch(CloudSite):
    target: ClassVar[str] = "opennebula"
    cloud: ClassVar[str] = "OpenNebula VM"

    def __init__(self, site: OpenNebulaSite, site_name: str, user: str, size: str | None = None) -> None:
        self.shape = size or site.size
        super().__init__(site_name, user, site.ssh_port, self.shape)
        self.site = site
        self.one = OneClient(site.endpoint, site.username, site.secret("password"), failure=TargetError,
                             settings_file="targets file")

    def check(self, count: int) -> None:
        super().check(count)
        if not SIZE_RE.match(self.shape):
            raise InvalidInput(f"size {self.shape[:40]!r}: give CPUSxMiB, e.g. 2x4096",
                               hint="give --size CPUSxMiB, or set size for the site in the targets file")
        if self.site.network_id is None:
            raise InvalidInput(f"opennebula site {self.site_name!r} has no network_id for launched machines",
                               hint="set network_id for the site in the targets file: a network this host reaches")

    def _template(self, name: str, image_ref: str, tag: str, key: KeyPair, host_key: KeyPair) -> str:
        found = SIZE_RE.match(self.shape)
        assert found is not None
        cpus, memory = found.groups()
        template: Template = [
            ("NAME", name), ("CPU", cpus), ("VCPU", cpus), ("MEMORY", memory),
            ("DISK", [("IMAGE_ID", image_ref)]), ("NIC", [("NETWORK_ID", str(self.site.network_id))]),
            (TAG_ATTRIBUTE, tag),
            ("CONTEXT", [("NETWORK", "YES"), ("SET_HOSTNAME", name), ("SSH_PUBLIC_KEY", key.public_line),
                         ("USER_DATA", base64.b64encode(cloud_config(host_key).encode()).decode()),
                         ("USERDATA_ENCODING", "base64")])]
        return render_template(template)

    def _create(self, name: str, image_ref: str, tag: str, key: KeyPair, host_key: KeyPair) -> str:
        return str(int(self.one("one.vm.allocate", self._template(name, image_ref, tag, key, host_key), False)))

    def _wait_running(self, remote_id: str, deadline: Deadline) -> str:
        return wait_running(self.one, int(remote_id), deadline, self.site.poll_interval,
                            "give --boot-timeout more seconds")

    def _release(self, tag: str, known: list[str]) -> int:
        pool = self.one("one.vmpool.infoextended", MINE, -1, -1, -1)  # .info's short bodies lack RAIN_LAUNCH
        vms = {str(v.ID) for v in (getattr(pool, "VM", None) or []) if _tagged(v, tag)}
        vms |= set(known)
        for vm_id in sorted(vms, key=int):
            terminate(self.one, int(vm_id))
            log.info("OpenNebula VM %s terminated", vm_id)
        return len(vms)


def _tagged(vm: Any, tag: str) -> bool:
    """A VM of the launch: named rain-TAG-..., RAIN_LAUNCH = TAG, not ended."""
    attributes = {**dict(vm.TEMPLATE or {}), **dict(vm.USER_TEMPLATE or {})}
    return (str(vm.NAME).startswith(f"rain-{tag}-") and attributes.get(TAG_ATTRIBUTE) == tag
            and int(vm.STATE or 0) != DONE)
