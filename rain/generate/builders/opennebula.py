"""OpenNebulaProvider: builder VMs allocated through pyone, OpenNebula's own Python bindings.

The builders file gives either `template_id` (a VM template that boots the
builder image; Rain reads it with one.template.info and adds its own CONTEXT)
or `image_id` + `network_id` (Rain writes the whole template). The VM is made
with one.vm.allocate; its CONTEXT carries

    NETWORK = "YES"
    SSH_PUBLIC_KEY = "<Rain's client key>"        root's authorized key (one-context installs it)
    RAIN_SSH_HOST_KEY = "<base64 of the OpenSSH private host key>"

The builder image's boot script must write RAIN_SSH_HOST_KEY, base64-decoded,
to /etc/ssh/ssh_host_ed25519_key (mode 0600) before sshd starts: Rain pins that
key and refuses any other (see docs/builders.md). The key is made for this one
VM and dies with it; anyone who can read the VM's template can read it.

Rain polls one.vm.info (pyone's typed VM) until ACTIVE/RUNNING, takes the first
NIC's IP, waits for sshd there (launch.wait_for_sshd), and ends the VM with
one.vm.action "terminate-hard". Any failure after allocate terminates the VM.
rain.clouds.opennebula makes the calls and maps pyone's exceptions to Rain's errors.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import model_validator

from rain.clouds.leases import Lease, build_leases, reap_builds
from rain.clouds.opennebula import OneClient, Vector, render_template, template_from_pyone, terminate, wait_running
from rain.config import Settings
from rain.errors import BuildError
from rain.generate.builders.launch import kept_login, undo_on_failure, wait_for_sshd
from rain.generate.builders.machine import Machine
from rain.generate.builders.settings import ProviderSettings, provider_settings
from rain.host.ssh import MachineKeys
from rain.progress import Reporter
from rain.repository.base import Repository
from rain.settings_file import Credentials, one_secret
from rain.waiting import Deadline

log = logging.getLogger(__name__)
class OpenNebulaBuilderSettings(ProviderSettings, Credentials):
    settings_file: ClassVar[str] = "builders file"
    endpoint: str
    """XML-RPC endpoint of the front-end, e.g. http://one.example.org:2633/RPC2."""
    username: str
    password_env: str | None = None
    password_file: str | None = None
    template_id: int | None = None
    """A VM template that boots the builder image (Rain adds NAME and its CONTEXT variables)."""
    image_id: int | None = None
    """Without template_id: the builder image's disk ..."""
    network_id: int | None = None
    """... and the virtual network its NIC is on (reachable from this host)."""
    memory: int = 2048
    """MiB, for image_id + network_id."""
    cpus: int = 2
    ssh_port: int = 22
    poll_interval: float = 2.0
    check_secrets = one_secret("password")

    @model_validator(mode="after")
    def _one_source(self) -> OpenNebulaBuilderSettings:
        if (self.template_id is None) == (self.image_id is None or self.network_id is None):
            raise ValueError("give template_id, or image_id and network_id (one of the two)")
        return self


class OpenNebulaProvider:
    name = "opennebula"

    def __init__(self, settings: Settings, repo: Repository | None = None) -> None:
        self.conf: OpenNebulaBuilderSettings = provider_settings(settings, "opennebula", OpenNebulaBuilderSettings)
        self.limit = self.conf.limit
        self.kept = settings.data_path / "builders" / "opennebula" / "kept"
        """--on-error keep: the login keys of machines left running."""
        self.one = OneClient(self.conf.endpoint, self.conf.username, self.conf.secret("password"),
                             failure=BuildError, settings_file="builders file")
        self.leases = build_leases(settings.data_path, "opennebula")

    def reap(self) -> list[str]:
        """Terminate the VMs of builds whose fg-image was killed (leases.py)."""
        return reap_builds(self.leases, "OpenNebula",
                           lambda ids: self._releaser(int(ids["vm"]))() if "vm" in ids else None)

    def _template(self, build_name: str, keys: MachineKeys) -> str:
        s = self.conf
        context: Vector = [("NETWORK", "YES"), ("SSH_PUBLIC_KEY", keys.client.public_line),
                           ("RAIN_SSH_HOST_KEY", base64.b64encode(keys.host.private_openssh.encode()).decode())]
        if s.template_id is not None:
            base = template_from_pyone(self.one("one.template.info", s.template_id, False, True).TEMPLATE)
        else:
            base = [("CPU", str(s.cpus)), ("VCPU", str(s.cpus)), ("MEMORY", str(s.memory)),
                    ("DISK", [("IMAGE_ID", str(s.image_id))]), ("NIC", [("NETWORK_ID", str(s.network_id))])]
        ours = {k for k, _ in context}
        old_context = next((v for k, v in base if k == "CONTEXT" and not isinstance(v, str)), [])
        merged = [(k, v) for k, v in old_context if k not in ours] + context
        body = [(k, v) for k, v in base if k not in ("NAME", "CONTEXT")]
        return render_template([("NAME", f"rain-{build_name}"), *body, ("CONTEXT", merged)])

    def launch(self, build_name: str, keys: MachineKeys, workdir: Path, reporter: Reporter | None = None) -> Machine:
        s = self.conf
        deadline = Deadline.after(s.boot_timeout)
        for line in self.reap():
            (reporter.info if reporter else log.warning)(line)
        lease = self.leases.take(f"rain-{build_name}-{uuid.uuid4().hex[:8]}")
        with undo_on_failure(lease.drop, "the lease"):
            vm_id = int(self.one("one.vm.allocate", self._template(build_name, keys), False))
        lease.record(vm=str(vm_id))
        what = f"OpenNebula VM {vm_id}"
        release = self._releaser(vm_id, lease)
        with undo_on_failure(release, what):
            ip = wait_running(self.one, vm_id, deadline, s.poll_interval, "raise boot_timeout in the builders file")
            log.info("%s is RUNNING at %s; waiting for its sshd", what, ip)
            wait_for_sshd(what, ip, s.ssh_port, keys, deadline, interval=min(1.0, s.poll_interval))

        def keep() -> str:
            lease.drop()  # the user's machine now, not a leftover for reap
            return (f"{what} left running: {kept_login(self.kept / f'vm-{vm_id}', ip, s.ssh_port, keys)}; "
                    f"remove it with 'onevm terminate --hard {vm_id}'")

        return Machine(name=f"one-vm-{vm_id}", host=ip, port=s.ssh_port, keys=keys, release=release, keep=keep)

    def _releaser(self, vm_id: int, lease: Lease | None = None) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            terminate(self.one, vm_id)
            done = True
            if lease is not None:
                lease.drop()
            log.info("OpenNebula VM %s terminated", vm_id)

        return release
