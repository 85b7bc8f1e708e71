"""OpenNebula: a qcow2 with cloud-init on the OpenNebula datasource, allocated through pyone.

The packed qcow2 is staged where the front-end can read it (`staging_dir`,
seen by OpenNebula as `staging_url` or as the same path), then
one.image.allocate creates the image in the datastore with that PATH (the
template rendered by rain.clouds.opennebula, every value quoted) and
Rain polls one.image.info (pyone's typed IMAGE) until the image is READY (or
ERROR, which fails the registration and deletes the image). The calls go
through pyone, OpenNebula's own bindings; rain.clouds.opennebula maps its
exceptions to Rain's errors.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from rain.clouds.opennebula import OneClient, render_template
from rain.config import Settings
from rain.errors import TargetError
from rain.register import adapt, cloudtest
from rain.register.chroot import Sandbox
from rain.register.models import Label, Packed, Severity, VetPolicy
from rain.register.targets.base import Firmware, SiteSettings, TargetName, pack_qcow2
from rain.settings_file import one_secret
from rain.waiting import Deadline, Pending, wait_for

log = logging.getLogger(__name__)
STATES = {0: "INIT", 1: "READY", 2: "USED", 3: "DISABLED", 4: "LOCKED", 5: "ERROR", 6: "CLONE", 7: "DELETE",
          8: "USED_PERS", 9: "LOCKED_USED", 10: "LOCKED_USED_PERS"}


class OpenNebulaSite(SiteSettings):
    endpoint: str
    """XML-RPC endpoint of the front-end, e.g. http://one.example.org:2633/RPC2."""
    username: str
    password_env: str | None = None
    password_file: str | None = None
    datastore_id: int = 1
    staging_dir: Path
    """A directory the front-end can read the packed qcow2 from."""
    staging_url: str | None = None
    """How the front-end sees staging_dir over HTTP; unset = it reads the same path."""
    timeout: float = 900.0
    firmware: Firmware = "bios"
    """Recorded on the image template as RAIN_FIRMWARE; a VM template sets OS/FIRMWARE from it."""
    network_id: int | None = None
    """`fg-image launch`: the virtual network the machines' NIC is on (this host must reach it)."""
    size: str = "1x1024"
    """`fg-image launch`: CPUSxMiB of the machines when --size is not given."""
    ssh_port: int = Field(22, ge=1, le=65535)
    """`fg-image launch`: the port the machines' sshd listens on."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """`fg-image launch`: seconds between looks at a VM that is not RUNNING yet."""
    check_secrets = one_secret("password")


class OpenNebulaTarget:
    name: ClassVar[TargetName] = TargetName.OPENNEBULA
    vet_policy: ClassVar[VetPolicy] = VetPolicy("cloud-opennebula", Severity.HIGH, frozenset({"kernel"}))
    derived_format: ClassVar[str] = "qcow2"
    site_model: ClassVar[type[OpenNebulaSite]] = OpenNebulaSite
    login_user: ClassVar[str] = "root"
    profile: ClassVar[adapt.CloudProfile] = adapt.CloudProfile(
        "opennebula", ("OpenNebula",), "root", ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"),
        {"disable_root": False})
    """OpenNebula's convention (and its one-context packages'): SSH_PUBLIC_KEY goes to root."""

    def __init__(self, site: OpenNebulaSite, site_name: str, settings: Settings, offline: bool = False) -> None:
        self.site, self.site_name, self.settings = site, site_name, settings
        # checked now, before anything moves; offline (--output) never calls the front-end
        self._password = "" if offline else site.secret("password")
        self._call = OneClient(site.endpoint, site.username, self._password, failure=TargetError,
                               settings_file="targets file")

    def adapt(self, root: Path, sandbox: Sandbox) -> list[str]:
        return adapt.cloud_disk(root, self.profile, sandbox) + adapt.one_username(root)

    def pack(self, root: Path, out: Path) -> Packed:
        return pack_qcow2(root, out)

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None:
        """Boot the packed disk as opennebula would (opennebula, virtio, the site's firmware) to an SSH login."""
        how = cloudtest.CloudBoot("opennebula", cloudtest.CONTEXT_USER, cloudtest.firmware_of(self.site.firmware),
                                  "virtio")  # USERNAME in the context: that login, with SSH_PUBLIC_KEY
        cloudtest.boot_test(packed.primary_path, packed.format, how, log_path, timeout)

    def publish(self, packed: Packed, label: Label) -> str:
        staged = self.site.staging_dir / f"{label.slug}.qcow2"
        try:
            self.site.staging_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(packed.primary_path, staged)
        except OSError as e:
            raise TargetError(f"cannot stage the image in {self.site.staging_dir}: {e.strerror}",
                              hint="check staging_dir in the targets file") from e
        try:
            path = f"{self.site.staging_url.rstrip('/')}/{staged.name}" if self.site.staging_url else str(staged)
            image_id = int(self._call("one.image.allocate", self.template(label, path), self.site.datastore_id))
            try:
                self._wait_ready(image_id)
            except BaseException:
                self.delete(str(image_id))
                raise
            return str(image_id)
        finally:
            staged.unlink(missing_ok=True)  # READY means the datastore holds its own copy

    def template(self, label: Label, path: str) -> str:
        """The image template: a virtio disk (DEV_PREFIX vd) in qcow2, and the firmware it boots with,
        which OpenNebula sets on the VM template (OS/FIRMWARE), so it is recorded here for one to use.
        Rendered with every value quoted: a label's name cannot add an attribute."""
        return render_template([("NAME", label.slug), ("PATH", path), ("TYPE", "OS"), ("DRIVER", "qcow2"),
                                ("FORMAT", "qcow2"), ("DEV_PREFIX", "vd"),
                                ("RAIN_FIRMWARE", self.site.firmware.upper()),
                                ("DESCRIPTION", f"{label.name} registered by Rain from {label.image_id}"),
                                ("RAIN_IMAGE", label.image_id)])

    def _wait_ready(self, image_id: int) -> None:
        def ready() -> bool | Pending:
            image = self._call("one.image.info", image_id, False)
            state = STATES.get(image.STATE, "UNKNOWN")
            if state == "ERROR":
                why = (image.TEMPLATE or {}).get("ERROR") or "no reason given"
                raise TargetError(f"OpenNebula image {image_id} went to ERROR: {why}",
                                  hint="check that the front-end can read staging_url/staging_dir")
            return True if state == "READY" else Pending(state)

        wait_for(ready, Deadline.after(self.site.timeout), 1.0, lambda state: TargetError(
            f"OpenNebula image {image_id} still {state} after {self.site.timeout:.0f}s"))

    def delete(self, remote_id: str) -> None:
        self._call("one.image.delete", int(remote_id), missing_ok=True)
