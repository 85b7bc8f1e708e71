"""OpenStack: a qcow2 with cloud-init for ConfigDrive/OpenStack metadata, uploaded to Glance v2.

Rain logs in through rain.clouds.openstack (as the openstack builder does:
password, application credential or clouds.yaml; Glance's endpoint comes from
the token's service catalog, type "image", by the site's interface and
region); then Glance v2 through that keystoneauth1 session: create the image
record with its properties, send the bytes (interoperable import: stage, then
glance-direct, where the cloud offers it; else a plain upload), wait until
active, check the size and the SHA-512 Glance computed (os_hash_value), add
the image's members. A failure after create deletes the image.
keystoneauth1's exceptions become Rain's kinds in rain.clouds.openstack;
Glance's HTTP refusals are read here (_check).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests
from keystoneauth1 import session as ks_session
from pydantic import Field, field_validator

from rain.clouds.openstack import KeystoneAuth, Login, keystone_errors, log_in, reason
from rain.config import Settings
from rain.errors import IntegrityError, TargetError, Unauthorized, one_line
from rain.register import adapt, cloudtest
from rain.register.chroot import Sandbox
from rain.register.models import Label, Packed, Severity, VetPolicy
from rain.register.targets.base import Firmware, SiteSettings, TargetName, pack_qcow2
from rain.releases import release_version
from rain.waiting import Deadline, Pending, poll, wait_for

log = logging.getLogger(__name__)
TASK_MESSAGE_WAIT = 10.0
"""Seconds to wait for Glance to record why an import task failed, after the image says it failed."""
RETRIED_STATUSES = (500, 502, 503, 504)
"""Answers on which a Glance GET or DELETE is tried again (3 more times, waits doubling from 0.5 s): a cloud's API
tier gives them while its database is briefly busy, and both calls are safe to repeat. Other calls are not
repeated: a second POST would make a second image."""


class OpenStackSite(SiteSettings, KeystoneAuth):
    visibility: Literal["private", "shared", "community", "public"] = "private"
    """Glance's visibility for every image registered on this site (public needs an admin)."""
    timeout: float = 900.0
    properties: dict[str, str] = {}
    """Extra Glance properties for every image registered on this site."""
    firmware: Firmware = "bios"
    """Published as hw_firmware_type: Nova boots the instance with SeaBIOS or with UEFI (OVMF)."""
    upload: Literal["auto", "import", "put"] = "auto"
    """How the bytes reach Glance: `import` (interoperable import: stage, then glance-direct), `put` (a plain
    upload to /file), `auto` (import where the cloud offers glance-direct, else put)."""
    share_with: list[str] = []
    """Project ids that become members of every image (Glance image sharing; the image is then `shared`)."""
    flavor: str | None = None
    """`fg-image launch`: the flavor (name or id) of the machines when --size is not given."""
    network: str | None = None
    """`fg-image launch`: the network (name or id) the machines join; this host must reach their addresses
    on it (or their floating IPs). Without it, Nova chooses."""
    ssh_port: int = Field(22, ge=1, le=65535)
    """`fg-image launch`: the port the machines' sshd listens on."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """`fg-image launch`: seconds between looks at a server that is not ACTIVE yet."""

    @field_validator("share_with")
    @classmethod
    def _project_ids(cls, value: list[str]) -> list[str]:
        for project in value:
            check_project_id(project)
        return value


PROJECT_ID_RE = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def check_project_id(project: str) -> str:
    """A Keystone project id (Glance's members are ids; a user may not list projects to look a name up)."""
    if not PROJECT_ID_RE.fullmatch(project):
        raise ValueError(f"{project!r} is not a project id: Glance shares with project ids "
                         "(`openstack project show NAME -f value -c id` prints one)")
    return project


def _check(resp: requests.Response, what: str, auth: OpenStackSite) -> requests.Response:
    """A Glance answer: 401 is Rain's credentials refused (exit 5); 403 and other refusals are the cloud
    declining this action for this user (exit 12), each with Glance's reason."""
    if resp.status_code == 401:
        raise Unauthorized(f"OpenStack refused {what}: HTTP 401: {reason(resp)}",
                           hint="check the credentials and project in the targets file")
    if resp.status_code == 403:
        raise TargetError(f"OpenStack refused {what}: HTTP 403: {reason(resp)}",
                          hint=f"user {auth.username or '(of the credential)'} needs the member role in project "
                               f"{auth.project_name or '(of the credential)'}, and the admin role to publish "
                               "public images")
    if resp.status_code >= 400:
        raise TargetError(f"OpenStack {what} failed: HTTP {resp.status_code}: {reason(resp)}")
    return resp


class OpenStackTarget:
    name: ClassVar[TargetName] = TargetName.OPENSTACK
    vet_policy: ClassVar[VetPolicy] = VetPolicy("cloud-openstack", Severity.HIGH, frozenset({"kernel"}))
    derived_format: ClassVar[str] = "qcow2"
    site_model: ClassVar[type[OpenStackSite]] = OpenStackSite
    login_user: ClassVar[str] = "debian"
    profile: ClassVar[adapt.CloudProfile] = adapt.CloudProfile(
        "openstack", ("ConfigDrive", "OpenStack"), "debian",
        ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"))

    def __init__(self, site: OpenStackSite, site_name: str, settings: Settings, offline: bool = False) -> None:
        self.site, self.site_name, self.settings = site, site_name, settings
        # credentials read and checked now, before anything moves; offline (--output) never logs in
        self._login: Login | None = None if offline else log_in(site)
        self._session: ks_session.Session | None = None
        self._glance: str | None = None
        self.members: list[str] = list(site.share_with)
        """Projects every image published here is shared with (the site's share_with, and --share-with-project)."""

    def adapt(self, root: Path, sandbox: Sandbox) -> list[str]:
        return adapt.cloud_disk(root, self.profile, sandbox)

    def pack(self, root: Path, out: Path) -> Packed:
        return pack_qcow2(root, out)

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None:
        """Boot the packed disk as openstack would (config-drive, virtio, the site's firmware) to an SSH login."""
        how = cloudtest.CloudBoot("config-drive", self.login_user, cloudtest.firmware_of(self.site.firmware), "virtio")
        cloudtest.boot_test(packed.primary_path, packed.format, how, log_path, timeout)

    def _request(self, method: str, url: str, what: str, ok: tuple[int, ...] = (), where: str | None = None,
                 **kwargs: Any) -> requests.Response:
        """A Glance call on the Keystone session (token added, renewed when it expires), its refusal checked
        (statuses in `ok` are returned, not refused); an unreachable Glance is named by `where` (default `url`)."""
        if method in ("GET", "DELETE"):
            kwargs.update(status_code_retries=3, retriable_status_codes=list(RETRIED_STATUSES))
        with keystone_errors(self.site, what, TargetError, "image", where or url):
            headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
            resp = self._keystone().request(url, method, raise_exc=False, timeout=(10, 300), headers=headers,
                                            **kwargs)
        return resp if resp.status_code in ok else _check(resp, what, self.site)

    def _keystone(self) -> ks_session.Session:
        if self._session is None:
            assert self._login is not None, "an offline target does not publish"
            self._session = self._login.session()
        return self._session

    def _images(self) -> str:
        """Glance's image URL, from the catalog (logging in once)."""
        if not self._glance:
            assert self._login is not None, "an offline target does not publish"
            url = self._login.endpoint(self._keystone(), "image", self.site, TargetError)
            self._glance = (url if url.endswith("/v2") else url + "/v2") + "/images"
        return self._glance

    def properties(self, label: Label) -> dict[str, str]:
        props = {"os_distro": label.os_family or "linux", "os_version": release_version(label.os_family,
                                                                                         label.os_release),
                 "architecture": label.arch, "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
                 "hw_rng_model": "virtio", "hw_firmware_type": self.site.firmware,
                 "rain_image": label.image_id}
        return {k: v for k, v in {**props, **self.site.properties}.items() if v}

    def preflight(self) -> None:
        """Log in and find Glance in the catalog: a wrong password or region is said before any work."""
        self._images()

    def add_member(self, project: str) -> None:
        self.members.append(check_project_id(project))

    def visibility(self) -> str:
        if not self.members:
            return self.site.visibility
        if self.site.visibility in ("public", "community"):
            raise TargetError(f"a {self.site.visibility} image is visible to every project: it has no members",
                              hint="drop share_with/--share-with-project, or set visibility: shared")
        return "shared"

    def publish(self, packed: Packed, label: Label) -> str:
        visibility = self.visibility()
        images = self._images()
        body = {"name": label.slug, "disk_format": "qcow2", "container_format": "bare",
                "visibility": visibility, **self.properties(label)}
        method = self._upload_method(images)  # before create: a refusal here leaves nothing to delete
        image_id = str(self._request("POST", images, "creating the Glance image", json=body).json()["id"])
        try:
            path = packed.primary_path
            with open(path, "rb") as f:
                # glance-direct: stage the bytes, then ask Glance to import them (its checks run then)
                self._request("PUT", f"{images}/{image_id}/{'stage' if method else 'file'}", "uploading the image",
                              data=f, headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(path.stat().st_size)})
            if method:
                self._request("POST", f"{images}/{image_id}/import", "importing the staged image",
                              json={"method": {"name": method}})
            log.info("Glance image %s %s", image_id, "staged and imported" if method else "uploaded")
            self._wait_active(images, image_id, path, imported=bool(method))
            for project in self.members:
                self._request("POST", f"{images}/{image_id}/members", f"sharing the image with project {project}",
                              json={"member": project})
            return image_id
        except BaseException:
            try:
                self.delete(image_id)
            except Exception as cleanup:  # the first error is the one to report; this one is logged
                log.error("could not delete the half-made Glance image %s (delete it with 'openstack image "
                          "delete %s'): %s", image_id, image_id, one_line(cleanup))
            raise

    def _upload_method(self, images: str) -> str | None:
        """"glance-direct" when the site's `upload` and the cloud allow an interoperable import, else None
        (a plain PUT of the file)."""
        if self.site.upload == "put":
            return None
        resp = self._request("GET", images.removesuffix("/images") + "/info/import", "reading the import methods",
                             ok=(404,))
        offered = (resp.json().get("import-methods") or {}).get("value") or [] if resp.status_code == 200 else []
        if "glance-direct" in offered:
            return "glance-direct"
        if self.site.upload == "import":
            raise TargetError(f"Glance offers no glance-direct import (its methods: {', '.join(offered) or 'none'})",
                              hint="set upload: auto or put in the targets file")
        return None

    def _wait_active(self, images: str, image_id: str, path: Path, imported: bool) -> None:
        """Until the image is active with Rain's bytes and, after an import, its import task has ended: Glance
        makes the image active before it records the task, and a call meanwhile (a delete, when a later step
        fails) can find its database busy."""
        def active() -> bool | Pending:
            image = self._request("GET", f"{images}/{image_id}", "reading the image").json()
            status = image.get("status", "")
            if status in ("killed", "deleted", "deactivated"):
                raise TargetError(f"Glance image {image_id} went to {status}")
            if image.get("os_glance_failed_import") and not image.get("os_glance_importing_to_stores"):
                raise TargetError(f"Glance could not import image {image_id}: {self._task_message(images, image_id)}",
                                  hint="the cloud's operators can read why in Glance's log; a common cause is "
                                       "bytes that do not match the image's disk_format (qcow2)")
            if status != "active":
                return Pending(status)
            if image.get("size") not in (None, path.stat().st_size):
                raise IntegrityError(f"Glance stored {image['size']} bytes, Rain sent {path.stat().st_size}")
            if image.get("os_hash_algo") == "sha512" and image.get("os_hash_value") != _sha512(path):
                raise IntegrityError("Glance's SHA-512 of the upload differs from the packed image")
            if imported and self._import_running(images, image_id):
                return Pending("active, its import task still running")
            return True

        wait_for(active, Deadline.after(self.site.timeout), 1.0, lambda status: TargetError(
            f"Glance image {image_id} still {status} after {self.site.timeout:.0f}s"))

    def _tasks(self, images: str, image_id: str) -> list[dict[str, Any]]:
        """The image's tasks, as Glance lists them (none from a Glance older than API 2.12, which has no list)."""
        resp = self._request("GET", f"{images}/{image_id}/tasks", "reading the import task", ok=(404,))
        return list(resp.json().get("tasks", [])) if resp.status_code == 200 else []

    def _import_running(self, images: str, image_id: str) -> bool:
        """Whether one of the image's tasks is still pending or processing."""
        return any(t.get("status") in ("pending", "processing") for t in self._tasks(images, image_id))

    def _task_message(self, images: str, image_id: str, wait: float = TASK_MESSAGE_WAIT) -> str:
        """Why an import failed: the message of the image's last task (Glance keeps it there). Glance marks
        the image failed before it records the task's failure, so the message is waited for, briefly."""
        messages: list[str] = []

        def recorded() -> bool:
            messages[:] = [str(t.get("message")) for t in self._tasks(images, image_id)
                           if t.get("status") == "failure" and t.get("message")]
            return bool(messages)

        poll(recorded, Deadline.after(wait), 0.5)
        return one_line(messages[-1])[:300] if messages else "Glance gave no reason (see its log)"

    def delete(self, remote_id: str) -> None:
        """Delete the image; one Glance no longer has is already deleted."""
        images = self._images()
        self._request("DELETE", f"{images}/{remote_id}", "deleting the image", ok=(404,), where=images)


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
