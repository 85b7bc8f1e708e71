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
    one.vmpool.info(session, filter, -1, -1, -1)        -> [True, "<VM_POOL><VM>...</VM>...</VM_POOL>", 0] (short)
    one.vmpool.infoextended(session, filter, -1, -1, -1) -> the same, whole VM bodies

session is "user:password". An allocated image starts LOCKED (4); a worker
fetches its PATH (http(s) URL or local path) like the datastore's cp driver,
then the image becomes READY (1) or ERROR (5, with TEMPLATE/ERROR). A user in
`not_authorized` logs in but may not create images or VMs (AUTHORIZATION). An
unknown method is an XML-RPC fault (-506), as oned's xmlrpc-c answers it.

An object is the XML document oned writes (Image::to_xml, VirtualMachine::to_xml,
VMTemplate::to_xml): the elements of share/doc/xsd/image.xsd, vm.xsd and
vmtemplate.xsd in their order, template values as CDATA, vector attributes as
nested elements. Rain's client, pyone, parses it into the bindings generated
from those schemas, so the shapes must be oned's.

VMs (the builder providers' tests): templates in OpenNebula syntax, vector
attributes included (NIC = [ NETWORK_ID = "0" ]). A VM goes PENDING (1) →
ACTIVE (3) with LCM_STATE PROLOG (1) → BOOT (2) → RUNNING (3); each NIC gets
an IP. Its "machine" is a real sshd (tests/support/simulators/sshvm.py) on that IP
and `ssh_port`, started shortly after RUNNING with CONTEXT's
RAIN_SSH_HOST_KEY (base64 OpenSSH private key; the builder image's way) or
else USER_DATA's cloud-config ssh_keys.ed25519_private (base64 with
USERDATA_ENCODING, cloud-init's way) as host key and SSH_PUBLIC_KEY as
root's authorized key. `vm_fault` makes new VMs fail
(LCM BOOT_FAILURE with USER_TEMPLATE/ERROR), never get an sshd, or serve
another host key. terminate / terminate-hard → DONE (6), sshd stopped; an
action on a DONE VM is an ACTION error, as in oned.
Error codes: AUTHENTICATION 0x0100, AUTHORIZATION 0x0200, NO_EXISTS 0x0400, ACTION 0x0800.

`drop_reply_after` cuts every reply short (its headers sent, its body only in
part) and closes the connection, as a front-end that dies mid-reply does.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape
from xmlrpc.client import Fault
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import yaml

from support.simulators.sshvm import SshVm, VmFault, allocate_address, release_address

AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION = 0x0100, 0x0200, 0x0400, 0x0800
_PERMISSIONS = ("<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0</GROUP_U>"
                "<GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M>"
                "<OTHER_A>0</OTHER_A></PERMISSIONS>")
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


def _owner(uid: int, uname: str) -> str:
    """The ID-less head of every object oned writes: owner, group (oneadmin's group 0 here)."""
    gname = "oneadmin" if uid == 0 else "users"
    return f"<UID>{uid}</UID><GID>{0 if uid == 0 else 1}</GID><UNAME>{escape(uname)}</UNAME><GNAME>{gname}</GNAME>"


def template_xml(attrs: list[tuple[str, str | dict[str, str]]]) -> str:
    """A template's inside as oned writes it in a TEMPLATE element: values as CDATA, a vector's as elements."""
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
    owner: tuple[int, str] = (0, "oneadmin")
    stime: int = 0
    etime: int = 0
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
    owner: tuple[int, str] = (0, "oneadmin")
    regtime: int = 0


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        cut = self.server.drop_reply_after
        if cut is None:
            return super().do_POST()
        wire, reply = self.wfile, io.BytesIO()
        self.wfile = reply  # type: ignore[assignment]
        try:
            super().do_POST()
        finally:
            self.wfile = wire
        head, _, body = reply.getvalue().partition(b"\r\n\r\n")
        wire.write(head + b"\r\n\r\n" + body[:cut])  # headers (Content-Length: all of it), part of the body
        self.close_connection = True


class _Server(SimpleXMLRPCServer):
    drop_reply_after: int | None = None
    def _dispatch(self, method: str, params: Iterable[Any]) -> Any:
        if method not in self.funcs:  # oned's XML-RPC library (xmlrpc-c) answers this way
            raise Fault(-506, f"Method '{method}' not defined")
        return super()._dispatch(method, params)


class OpenNebulaSimulator:
    def __init__(self, users: dict[str, str] | None = None, datastores: tuple[int, ...] = (1,)) -> None:
        self.users = users or {"oneadmin": "opennebula"}
        self.not_authorized: set[str] = set()
        """Users who are authenticated but may not create images or VMs (oned's AUTHORIZATION error)."""
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
        self.server = _Server(("127.0.0.1", 0), _Handler, allow_none=True, logRequests=False)
        for name in ("allocate", "info", "delete"):
            self.server.register_function(getattr(self, f"_{name}"), f"one.image.{name}")
        for name in ("allocate", "info", "action"):
            self.server.register_function(getattr(self, f"_vm_{name}"), f"one.vm.{name}")
        self.server.register_function(self._template_info, "one.template.info")  # type: ignore[arg-type]
        for name, extended in (("one.vmpool.info", False), ("one.vmpool.infoextended", True)):
            self.server.register_function(functools.partial(self._vmpool, name, extended), name)

    @property
    def drop_reply_after(self) -> int | None:
        """Send each reply's headers and only this many bytes of its body, then close the connection
        (oned's host dying mid-reply); None: whole replies."""
        return self.server.drop_reply_after

    @drop_reply_after.setter
    def drop_reply_after(self, count: int | None) -> None:
        self.server.drop_reply_after = count

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

    def _auth(self, session: str, call: str) -> list | None:
        user, _, password = session.partition(":")
        if self.users.get(user) != password:
            return [False, f"[{call}] User couldn't be authenticated, aborting call.", AUTHENTICATION]
        return None

    def _user(self, session: str) -> tuple[int, str]:
        """(uid, name) of an authenticated session's user: oneadmin is 0, the others in order."""
        user = session.partition(":")[0]
        return (0 if user == "oneadmin" else 2 + list(self.users).index(user)), user

    def _create(self, session: str, call: str, what: str) -> list | None:
        """oned's authorization of a CREATE: refused for a user in not_authorized."""
        if session.partition(":")[0] in self.not_authorized:
            return [False, f"[{call}] User [{self._user(session)[0]}] : Not authorized to perform CREATE {what}.",
                    AUTHORIZATION]
        return None

    def _allocate(self, session: str, template: str, datastore: int, check_capacity: bool = True) -> list:
        self.calls.append("one.image.allocate")
        if denied := self._auth(session, "one.image.allocate") or self._create(session, "one.image.allocate", "IMAGE"):
            return denied
        if datastore not in self.datastores:
            return [False, f"[one.image.allocate] Error getting datastore [{datastore}].", NO_EXISTS]
        attrs = {k: v for k, v in parse_template(template) if isinstance(v, str)}
        if "NAME" not in attrs or "PATH" not in attrs:
            return [False, "[one.image.allocate] No NAME or PATH in template.", ACTION]
        if any(img.name == attrs["NAME"] for img in self.images.values()):
            return [False, f"[one.image.allocate] NAME is already taken by IMAGE {attrs['NAME']}.", ACTION]
        with self._lock:
            image = SimImage(self._next, attrs["NAME"], attrs["PATH"], datastore, template=attrs,
                             owner=self._user(session), regtime=int(time.time()))
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
        if denied := self._auth(session, "one.image.info"):
            return denied
        image = self.images.get(image_id)
        if image is None:
            return [False, f"[one.image.info] Error getting image [{image_id}].", NO_EXISTS]
        attrs: list[tuple[str, str | dict[str, str]]] = list(image.template.items())
        if image.error:
            attrs.append(("ERROR", image.error))
        source = f"/var/lib/one/datastores/{image.datastore}/{image.sha256[:32]}" if image.sha256 else ""
        xml = (f"<IMAGE><ID>{image.id}</ID>{_owner(*image.owner)}<NAME>{escape(image.name)}</NAME>{_PERMISSIONS}"
               f"<TYPE>0</TYPE><DISK_TYPE>0</DISK_TYPE><PERSISTENT>0</PERSISTENT><REGTIME>{image.regtime}</REGTIME>"
               f"<MODTIME>{image.regtime}</MODTIME><SOURCE>{escape(source)}</SOURCE><PATH>{escape(image.path)}</PATH>"
               f"<FORMAT>{escape(image.template.get('FORMAT', 'raw'))}</FORMAT><FS></FS><SIZE>{image.size_mb}</SIZE>"
               f"<STATE>{image.state}</STATE><PREV_STATE>{image.state}</PREV_STATE><RUNNING_VMS>0</RUNNING_VMS>"
               f"<CLONING_OPS>0</CLONING_OPS><CLONING_ID>-1</CLONING_ID><TARGET_SNAPSHOT>-1</TARGET_SNAPSHOT>"
               f"<DATASTORE_ID>{image.datastore}</DATASTORE_ID><DATASTORE>default</DATASTORE><VMS></VMS>"
               f"<CLONES></CLONES><APP_CLONES></APP_CLONES><TEMPLATE>{template_xml(attrs)}</TEMPLATE>"
               "<SNAPSHOTS><ALLOW_ORPHANS>NO</ALLOW_ORPHANS><CURRENT_BASE>-1</CURRENT_BASE>"
               "<NEXT_SNAPSHOT>0</NEXT_SNAPSHOT></SNAPSHOTS></IMAGE>")
        return [True, xml, 0]

    def _delete(self, session: str, image_id: int, force: bool = False) -> list:
        self.calls.append("one.image.delete")
        if denied := self._auth(session, "one.image.delete"):
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
        body = template_xml(parse_template(self.templates[template_id]))
        return [True, f"<VMTEMPLATE><ID>{template_id}</ID>{_owner(0, 'oneadmin')}<NAME>t{template_id}</NAME>"
                      f"{_PERMISSIONS}<REGTIME>0</REGTIME><TEMPLATE>{body}</TEMPLATE></VMTEMPLATE>", 0]

    def _vm_allocate(self, session: str, template: str, hold: bool = False) -> list:
        self.calls.append("one.vm.allocate")
        if denied := self._auth(session, "one.vm.allocate") or self._create(session, "one.vm.allocate", "VM"):
            return denied
        attrs = parse_template(template)
        names = [k for k, _ in attrs]
        if "MEMORY" not in names or not any(k == "DISK" for k in names):
            return [False, "[one.vm.allocate] No MEMORY or DISK in template.", ACTION]
        nics = [v for k, v in attrs if k == "NIC" and isinstance(v, dict)]
        with self._lock:
            vm = SimVm(self._next + 1000, dict(attrs).get("NAME", "") or f"one-{self._next}", attrs,  # type: ignore[arg-type]
                       owner=self._user(session), stime=int(time.time()))
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
        host_key = base64.b64decode(context.get("RAIN_SSH_HOST_KEY", "")).decode() or _user_data_host_key(context)
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
        return [True, self._vm_xml(vm), 0]

    def _vmpool(self, method: str, extended: bool, session: str, filter_: int = -2, start: int = -1, end: int = -1,
                state: int = -1) -> list:
        """The caller's VMs (filter -3) or all (-2), not DONE (state -1), whole range only. As oned since 5.8,
        .info gives short bodies (no attributes of the VM's own but NAME-like ones) and .infoextended whole."""
        self.calls.append(method)
        if denied := self._auth(session, method):
            return denied
        if filter_ not in (-3, -2) or (start, end) != (-1, -1) or state != -1:
            return [False, f"[{method}] This simulator lists whole pools only.", ACTION]
        me = self._user(session)
        with self._lock:
            vms = [vm for vm in self.vms.values() if vm.state != 6 and (filter_ == -2 or vm.owner == me)]
        return [True, "<VM_POOL>" + "".join(self._vm_xml(vm, short=not extended) for vm in vms) + "</VM_POOL>", 0]

    def _vm_xml(self, vm: SimVm, short: bool = False) -> str:
        user = f"<ERROR>{_cdata(vm.error)}</ERROR>" if vm.error else ""
        kept = [(k, v) for k, v in vm.template if not short or k in ("NIC", "DISK", "CPU", "MEMORY")]
        template = template_xml([*kept, ("VMID", str(vm.id))])
        return (f"<VM><ID>{vm.id}</ID>{_owner(*vm.owner)}<NAME>{escape(vm.name)}</NAME>{_PERMISSIONS}"
               f"<LAST_POLL>0</LAST_POLL><STATE>{vm.state}</STATE><LCM_STATE>{vm.lcm_state}</LCM_STATE>"
               f"<PREV_STATE>{vm.state}</PREV_STATE><PREV_LCM_STATE>{vm.lcm_state}</PREV_LCM_STATE>"
               f"<RESCHED>0</RESCHED><STIME>{vm.stime}</STIME><ETIME>{vm.etime}</ETIME><DEPLOY_ID></DEPLOY_ID>"
               f"<MONITORING></MONITORING><SCHED_ACTIONS></SCHED_ACTIONS><TEMPLATE>{template}</TEMPLATE>"
               f"<USER_TEMPLATE>{user}</USER_TEMPLATE><HISTORY_RECORDS></HISTORY_RECORDS>"
               "<BACKUPS><BACKUP_CONFIG></BACKUP_CONFIG><BACKUP_IDS></BACKUP_IDS></BACKUPS></VM>")

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
            vm.state, vm.lcm_state, vm.etime = 6, 0, int(time.time())
        self._power_off(vm)
        return [True, vm.id, 0]

    def _power_off(self, vm: SimVm) -> None:
        if vm.machine is not None:
            vm.machine.stop()
        for k, v in vm.template:
            if k == "NIC" and isinstance(v, dict) and v.get("IP"):
                release_address(v["IP"])


def _user_data_host_key(context: dict[str, str]) -> str:
    """The host key cloud-init would install from CONTEXT's USER_DATA cloud-config, or ""."""
    data = context.get("USER_DATA", "")
    if context.get("USERDATA_ENCODING") == "base64":
        data = base64.b64decode(data).decode()
    if not data.startswith("#cloud-config"):
        return ""
    config = yaml.safe_load(data) or {}
    return str((config.get("ssh_keys") or {}).get("ed25519_private", ""))
