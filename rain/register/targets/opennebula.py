"""OpenNebula: a qcow2 with cloud-init on the OpenNebula datasource, allocated through XML-RPC.

The packed qcow2 is staged where the front-end can read it (`staging_dir`,
seen by OpenNebula as `staging_url` or as the same path), then
one.image.allocate creates the image in the datastore with that PATH and
Rain polls one.image.info until the image is READY (or ERROR, which fails
the registration and deletes the image). Responses have OpenNebula's
documented shape [success, result-or-error, error code, ...].
"""

from __future__ import annotations

import http.client
import logging
import shutil
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from pathlib import Path
from typing import Any, ClassVar

from rain.config import Settings
from rain.errors import TargetError, Unauthorized, Unreachable
from rain.register import adapt, disk
from rain.register.models import Label, Packed, Severity, VetPolicy
from rain.register.targets.base import SiteSettings, TargetName, one_secret

log = logging.getLogger(__name__)
STATES = {0: "INIT", 1: "READY", 2: "USED", 3: "DISABLED", 4: "LOCKED", 5: "ERROR", 6: "CLONE", 7: "DELETE",
          8: "USED_PERS", 9: "LOCKED_USED", 10: "LOCKED_USED_PERS"}
AUTH_ERRORS = (0x0100, 0x0200)  # AUTHENTICATION, AUTHORIZATION
NO_EXISTS = 0x0400


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
    check_secrets = one_secret("password")


class _TimeoutTransport(xmlrpc.client.Transport):
    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = 60
        return conn


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = 60
        return conn


class OpenNebulaTarget:
    name: ClassVar[TargetName] = TargetName.OPENNEBULA
    vet_policy: ClassVar[VetPolicy] = VetPolicy("cloud-opennebula", Severity.HIGH, frozenset({"kernel"}))
    derived_format: ClassVar[str] = "qcow2"
    site_model: ClassVar[type[OpenNebulaSite]] = OpenNebulaSite

    def __init__(self, site: OpenNebulaSite, site_name: str, settings: Settings) -> None:
        self.site, self.site_name = site, site_name
        self._password = site.secret("password")  # checked now, before anything moves
        transport = _TimeoutSafeTransport() if site.endpoint.startswith("https") else _TimeoutTransport()
        self._proxy = xmlrpc.client.ServerProxy(site.endpoint, transport=transport, allow_none=True)

    def adapt(self, root: Path) -> list[str]:
        return adapt.cloud_disk(root, "opennebula", ["OpenNebula"])

    def pack(self, root: Path, out: Path) -> Packed:
        out.mkdir(parents=True, exist_ok=True)
        raw = disk.make_raw(root, out / "disk.raw")
        qcow2 = disk.to_qcow2(raw, out / "disk.qcow2")
        raw.unlink()
        return Packed(out, {"disk.qcow2": qcow2}, "disk.qcow2", "qcow2")

    def _call(self, method: str, *args: Any, missing_ok: bool = False) -> Any:
        """One XML-RPC call; [False, message, code] and transport failures become Rain errors."""
        session = f"{self.site.username}:{self._password}"
        try:
            reply = getattr(self._proxy, method)(session, *args)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"cannot reach OpenNebula at {self.site.endpoint}: {e}",
                              hint="check endpoint in the targets file and that oned is running") from e
        except xmlrpc.client.Fault as e:
            raise TargetError(f"OpenNebula {method} fault {e.faultCode}: {e.faultString}") from e
        except xmlrpc.client.ProtocolError as e:
            raise TargetError(f"OpenNebula {method}: HTTP {e.errcode} {e.errmsg}",
                              hint="check that endpoint is the XML-RPC URL (usually ends in /RPC2)") from e
        if not isinstance(reply, list) or len(reply) < 2:
            raise TargetError(f"OpenNebula {method} returned an unexpected reply: {str(reply)[:100]}")
        if not reply[0]:
            code = reply[2] if len(reply) > 2 else 0
            if missing_ok and code == NO_EXISTS:
                return None
            kind = Unauthorized if code in AUTH_ERRORS else TargetError
            raise kind(f"OpenNebula {method} failed: {reply[1]}",
                       hint="check username/password" if code in AUTH_ERRORS else None)
        return reply[1]

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
            template = "\n".join(f'{k} = "{v}"' for k, v in {
                "NAME": label.slug, "PATH": path, "TYPE": "OS", "DRIVER": "qcow2", "FORMAT": "qcow2",
                "DESCRIPTION": f"{label.name} registered by Rain from {label.image_id}",
                "RAIN_IMAGE": label.image_id}.items())
            image_id = int(self._call("one.image.allocate", template, self.site.datastore_id))
            try:
                self._wait_ready(image_id)
            except BaseException:
                self.delete(str(image_id))
                raise
            return str(image_id)
        finally:
            staged.unlink(missing_ok=True)  # READY means the datastore holds its own copy

    def _wait_ready(self, image_id: int) -> None:
        deadline = time.monotonic() + self.site.timeout
        state = "INIT"
        while time.monotonic() < deadline:
            info = ET.fromstring(self._call("one.image.info", image_id, False))
            state = STATES.get(int(info.findtext("STATE", "0")), "UNKNOWN")
            if state == "READY":
                return
            if state == "ERROR":
                why = info.findtext("TEMPLATE/ERROR") or "no reason given"
                raise TargetError(f"OpenNebula image {image_id} went to ERROR: {why}",
                                  hint="check that the front-end can read staging_url/staging_dir")
            time.sleep(1)
        raise TargetError(f"OpenNebula image {image_id} still {state} after {self.site.timeout:.0f}s")

    def delete(self, remote_id: str) -> None:
        self._call("one.image.delete", int(remote_id), missing_ok=True)
