"""SIMULATOR of OpenNebula's XML-RPC image and VM APIs (oned cannot run here) — for Rain's tests.

Speaks the real wire protocol (XML-RPC over HTTP at /RPC2) and reproduces the
documented request and response shapes of the calls Rain uses:

    one.image.allocate(session, template, datastore_id) -> [True, image_id, 0] | [False, message, errcode]
    one.image.info(session, image_id, decrypt)         -> [True, "<IMAGE>...</IMAGE>", 0] | [False, ...]
    one.image.delete(session, image_id)                -> [True, image_id, 0] | [False, ...]

    one.template.info(session, id, extended, decrypt)  -> [True, "<VMTEMPLATE>...</VMTEMPLATE>", 0] | [False, ...]
    one.vm.allocate(session, template, hold)            -> [True, vm_id, 0] | [False, ...]
    one.vm.info(session, vm_id, decrypt)                -> [True, "<VM>...</VM>", 0] | [False, ...]
    one.vm.action(session, action, vm_id)               -> [True, vm_id, 0] | [False, ...]

session is "user:password". An allocated image starts LOCKED (4); a worker
fetches its PATH (http(s) URL or local path) like the datastore's cp driver,
then the image becomes READY (1) or ERROR (5, with TEMPLATE/ERROR).

VMs (the builder providers' tests): templates in OpenNebula syntax, vector
attributes included (NIC = [ NETWORK_ID = "0" ]). A VM goes PENDING (1) →
ACTIVE (3) with LCM_STATE PROLOG (1) → BOOT (2) → RUNNING (3); each NIC gets
an IP. Its "machine" is a real sshd (tests/support/simulators/sshvm.py) on that IP
and `ssh_port`, started shortly after RUNNING with CONTEXT's
RAIN_SSH_HOST_KEY (base64 OpenSSH private key) as host key and
SSH_PUBLIC_KEY as root's authorized key. `vm_fault` makes new VMs fail
(LCM BOOT_FAILURE with USER_TEMPLATE/ERROR), never get an sshd, or serve
another host key. terminate / terminate-hard → DONE (6), sshd stopped; an
action on a DONE VM is an ACTION error, as in oned.
Error codes: AUTHENTICATION 0x0100, AUTHORIZATION 0x0200, NO_EXISTS 0x0400, ACTION 0x0800.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from xml.sax.saxutils import escape
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from support.simulators.sshvm import SshVm, VmFault, allocate_address, release_address

AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION = 0x0100, 0x0200, 0x0400, 0x0800
_ATTR = re.compile(r'([A-Z0-9_]+)\s*=\s*("(?:[^"\\]|\\.)*"|\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\])', re.S)
_PAIR = re.compile(r'([A-Z0-9_]+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_template(text: str) -> list[tuple[str, str | dict[str, str]]]:
    """OpenNebula template syntax → (name, value) pairs; vector attributes as dicts."""
    out: list[tuple[str, str | dict[str, str]]] = []
    for name, value in _ATTR.findall(text):
        if value.startswith("["):
            out.append((name, {k: _unquote(v) for k, v in _PAIR.findall(value)}))
        else:
            out.append((name, _unquote(value[1:-1])))
    return out


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml(attrs: list[tuple[str, str | dict[str, str]]]) -> str:
    parts = []
    for name, value in attrs:
        inner = value if isinstance(value, str) else None
        body = _cdata(inner) if inner is not None else "".join(
            f"<{k}>{_cdata(v)}</{k}>" for k, v in value.items())  # type: ignore[union-attr]
        parts.append(f"<{name}>{body}</{name}>")
    return "".join(parts)


@dataclass
class SimVm:
    id: int
    name: str
    template: list[tuple[str, str | dict[str, str]]]
    state: int = 1
    lcm_state: int = 0
    error: str = ""
    machine: SshVm | None = None


@dataclass
class SimImage:
    id: int
    name: str
    path: str
    datastore: int
    state: int = 4
    size_mb: int = 0
    sha256: str = ""
    error: str = ""
    template: dict[str, str] = field(default_factory=dict)


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def log_message(self, format: str, *args: object) -> None:
        pass


class OpenNebulaSimulator:
    def __init__(self, users: dict[str, str] | None = None, datastores: tuple[int, ...] = (1,)) -> None:
        self.users = users or {"oneadmin": "opennebula"}
        self.datastores = datastores
        self.images: dict[int, SimImage] = {}
        self.deleted: list[int] = []
        self.fail_fetch = False
        self.calls: list[str] = []
        self._next = 0
        self._lock = threading.Lock()
        self.vms: dict[int, SimVm] = {}
        self.templates: dict[int, str] = {}
        self.ssh_port = 22
        """Where each VM's sshd listens (on the VM's own 127.0.0.N)."""
        self.vm_fault = VmFault.NONE
        self.sshd_delay = 0.3
        """Seconds between RUNNING and the VM's sshd listening (a guest still booting)."""
        self.machines: list[SshVm] = []
        """Every simulated machine ever started, to check that none is left running."""
        self.max_live_vms = 0
        """The most VMs not yet DONE at once (to check a provider's limit)."""
        self.server = SimpleXMLRPCServer(("127.0.0.1", 0), _Handler, allow_none=True, logRequests=False)
        for name in ("allocate", "info", "delete"):
            self.server.register_function(getattr(self, f"_{name}"), f"one.image.{name}")
        for name in ("allocate", "info", "action"):
            self.server.register_function(getattr(self, f"_vm_{name}"), f"one.vm.{name}")
        self.server.register_function(self._template_info, "one.template.info")  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"

    def start(self) -> OpenNebulaSimulator:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="one-sim").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for vm in self.vms.values():
            self._power_off(vm)

    def _auth(self, session: str, call: str = "one.image") -> list | None:
        user, _, password = session.partition(":")
        if self.users.get(user) != password:
            return [False, f"[{call}] User couldn't be authenticated, aborting call.", AUTHENTICATION]
        return None

    def _allocate(self, session: str, template: str, datastore: int, check_capacity: bool = True) -> list:
        self.calls.append("one.image.allocate")
        if denied := self._auth(session):
            return denied
        if datastore not in self.datastores:
            return [False, f"[one.image.allocate] Error getting datastore [{datastore}].", NO_EXISTS]
        attrs = dict(re.findall(r'^\s*([A-Z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"', template, re.M))
        if "NAME" not in attrs or "PATH" not in attrs:
            return [False, "[one.image.allocate] No NAME or PATH in template.", ACTION]
        if any(img.name == attrs["NAME"] for img in self.images.values()):
            return [False, f"[one.image.allocate] NAME is already taken by IMAGE {attrs['NAME']}.", ACTION]
        with self._lock:
            image = SimImage(self._next, attrs["NAME"], attrs["PATH"], datastore, template=attrs)
            self.images[image.id] = image
            self._next += 1
        threading.Thread(target=self._copy, args=(image,), daemon=True).start()
        return [True, image.id, 0]

    def _copy(self, image: SimImage) -> None:
        """What the datastore's cp driver does: fetch PATH into the datastore."""
        try:
            if self.fail_fetch:
                raise OSError("simulated datastore failure")
            opener = urllib.request.urlopen(image.path, timeout=60) if "://" in image.path else open(image.path, "rb")
            digest, size = hashlib.sha256(), 0
            with opener as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            image.sha256, image.size_mb, image.state = digest.hexdigest(), max(1, size >> 20), 1
        except Exception as e:  # any failure is an ERROR state, as in oned
            image.error, image.state = f"Error copying image in the datastore: {e}", 5

    def _info(self, session: str, image_id: int, decrypt: bool = False) -> list:
        self.calls.append("one.image.info")
        if denied := self._auth(session):
            return denied
        image = self.images.get(image_id)
        if image is None:
            return [False, f"[one.image.info] Error getting image [{image_id}].", NO_EXISTS]
        template = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in image.template.items())
        if image.error:
            template += f"<ERROR><![CDATA[{image.error}]]></ERROR>"
        xml = (f"<IMAGE><ID>{image.id}</ID><UID>0</UID><NAME>{escape(image.name)}</NAME><TYPE>0</TYPE>"
               f"<PATH>{escape(image.path)}</PATH><SOURCE>/var/lib/one/datastores/{image.datastore}/"
               f"{image.sha256[:32]}</SOURCE><STATE>{image.state}</STATE><SIZE>{image.size_mb}</SIZE>"
               f"<DATASTORE_ID>{image.datastore}</DATASTORE_ID><TEMPLATE>{template}</TEMPLATE></IMAGE>")
        return [True, xml, 0]

    def _delete(self, session: str, image_id: int, force: bool = False) -> list:
        self.calls.append("one.image.delete")
        if denied := self._auth(session):
            return denied
        if self.images.pop(image_id, None) is None:
            return [False, f"[one.image.delete] Error getting image [{image_id}].", NO_EXISTS]
        self.deleted.append(image_id)
        return [True, image_id, 0]

    # --- VM templates and VMs ------------------------------------------------------------------
    def add_template(self, text: str) -> int:
        """Create a VM template (what `onetemplate create` does); returns its id."""
        with self._lock:
            template_id = 100 + len(self.templates)
            self.templates[template_id] = text
        return template_id

    def _template_info(self, session: str, template_id: int, extended: bool = False,
                       decrypt: bool = False) -> list:
        self.calls.append("one.template.info")
        if denied := self._auth(session, "one.template.info"):
            return denied
        if template_id not in self.templates:
            return [False, f"[one.template.info] Error getting VM template [{template_id}].", NO_EXISTS]
        body = _xml(parse_template(self.templates[template_id]))
        return [True, f"<VMTEMPLATE><ID>{template_id}</ID><UID>0</UID><NAME>t{template_id}</NAME>"
                      f"<TEMPLATE>{body}</TEMPLATE></VMTEMPLATE>", 0]

    def _vm_allocate(self, session: str, template: str, hold: bool = False) -> list:
        self.calls.append("one.vm.allocate")
        if denied := self._auth(session, "one.vm.allocate"):
            return denied
        attrs = parse_template(template)
        names = [k for k, _ in attrs]
        if "MEMORY" not in names or not any(k == "DISK" for k in names):
            return [False, "[one.vm.allocate] No MEMORY or DISK in template.", ACTION]
        nics = [v for k, v in attrs if k == "NIC" and isinstance(v, dict)]
        with self._lock:
            vm = SimVm(self._next + 1000, dict(attrs).get("NAME", "") or f"one-{self._next}", attrs)  # type: ignore[arg-type]
            self._next += 1
            for nic_id, nic in enumerate(nics):
                nic.update(IP=allocate_address(), NIC_ID=str(nic_id))
            self.vms[vm.id] = vm
            self.max_live_vms = max(self.max_live_vms, sum(v.state != 6 for v in self.vms.values()))
        threading.Thread(target=self._boot, args=(vm, self.vm_fault), daemon=True).start()
        return [True, vm.id, 0]

    def _boot(self, vm: SimVm, fault: VmFault) -> None:
        """What oned and the hypervisor do: schedule, copy the disk, boot; then the guest starts sshd."""
        for state, lcm in ((3, 1), (3, 2)):
            time.sleep(0.05)
            with self._lock:
                if vm.state != 1 and vm.state != 3:
                    return
                vm.state, vm.lcm_state = state, lcm
            if fault == VmFault.STUCK:
                return  # PROLOG for ever
        with self._lock:
            if vm.state != 3:
                return
            if fault == VmFault.FAIL:
                vm.lcm_state, vm.error = 36, "Error executing image transfer script: simulated boot failure"
                return
            vm.lcm_state = 3
        time.sleep(self.sshd_delay)
        context = next((v for k, v in vm.template if k == "CONTEXT" and isinstance(v, dict)), {})
        nics = [v for k, v in vm.template if k == "NIC" and isinstance(v, dict)]
        if not nics:
            return
        host_key = base64.b64decode(context.get("RAIN_SSH_HOST_KEY", "")).decode()
        machine = SshVm(nics[0]["IP"], self.ssh_port, host_key, context.get("SSH_PUBLIC_KEY", ""),
                        fault if host_key else VmFault.WRONG_HOST_KEY)
        with self._lock:
            if vm.state != 3:
                return
            vm.machine = machine
            self.machines.append(machine)
        try:
            machine.start()
        except RuntimeError:
            if vm.state == 3:
                raise
        if vm.state != 3:  # terminated while its sshd was starting
            machine.stop()

    def _vm_info(self, session: str, vm_id: int, decrypt: bool = False) -> list:
        self.calls.append("one.vm.info")
        if denied := self._auth(session, "one.vm.info"):
            return denied
        vm = self.vms.get(vm_id)
        if vm is None:
            return [False, f"[one.vm.info] Error getting virtual machine [{vm_id}].", NO_EXISTS]
        user = f"<ERROR>{_cdata(vm.error)}</ERROR>" if vm.error else ""
        xml = (f"<VM><ID>{vm.id}</ID><UID>0</UID><GID>0</GID><NAME>{escape(vm.name)}</NAME>"
               f"<STATE>{vm.state}</STATE><LCM_STATE>{vm.lcm_state}</LCM_STATE>"
               f"<TEMPLATE>{_xml(vm.template)}</TEMPLATE><USER_TEMPLATE>{user}</USER_TEMPLATE></VM>")
        return [True, xml, 0]

    def _vm_action(self, session: str, action: str, vm_id: int) -> list:
        self.calls.append(f"one.vm.action {action}")
        if denied := self._auth(session, "one.vm.action"):
            return denied
        vm = self.vms.get(vm_id)
        if vm is None:
            return [False, f"[one.vm.action] Error getting virtual machine [{vm_id}].", NO_EXISTS]
        if action not in ("terminate", "terminate-hard"):
            return [False, f"[one.vm.action] Action \"{action}\" is not supported by this simulator.", ACTION]
        with self._lock:
            if vm.state == 6:
                return [False, f"[one.vm.action] Error performing action \"{action}\": "
                               "This action is not available for state DONE", ACTION]
            vm.state, vm.lcm_state = 6, 0
        self._power_off(vm)
        return [True, vm.id, 0]

    def _power_off(self, vm: SimVm) -> None:
        if vm.machine is not None:
            vm.machine.stop()
        for k, v in vm.template:
            if k == "NIC" and isinstance(v, dict) and v.get("IP"):
                release_address(v["IP"])
