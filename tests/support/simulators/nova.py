"""SIMULATOR of OpenStack Nova (compute v2.1) and the one Neutron look-up novaclient makes — for Rain's tests.

Why Nova is simulated: past its API tier Nova needs nova-conductor,
nova-scheduler, nova-compute with a hypervisor, placement, a message bus
(RabbitMQ) and Neutron with its agents; none of that can run here. Keystone and
Glance are NOT simulated: they are the real ones from PyPI
(tests/support/openstack_cloud.py), and this simulator relies on them the way
Nova does:

- every request's X-Auth-Token is validated against the real Keystone
  (GET {keystone}/auth/tokens, X-Subject-Token: the token, X-Auth-Token: an
  admin token; 200 is valid), each validation cached for a few seconds (never
  past the token's expiry), as keystonemiddleware's auth_token does; a token
  Keystone does not accept gets Nova's 401;
- a server's imageRef is looked up in the real Glance with the caller's token
  (it must exist, be visible to the caller and be active), as nova-api does.

The test registers the simulator in the real Keystone's catalog (type
"compute" at {url}/compute/v2.1, type "network" at {url}/network), so
novaclient finds it as it finds a real Nova; novaclient's image look-up
(`nova.glance.find_image`) goes to the catalog's image endpoint, the real Glance.

    GET    /compute/v2.1/flavors/{id}, /flavors, /flavors/detail   → flavor(s) | 404 itemNotFound
    POST   /compute/v2.1/os-keypairs     import {"keypair": {name, public_key}} → 200 | 409 if the name is taken
    GET    /compute/v2.1/os-keypairs/{name}; DELETE → 202 | 404      (key pairs are the token's user's)
    POST   /compute/v2.1/servers         {"server": {name, imageRef, flavorRef, key_name, user_data (base64),
                                          networks: [{"uuid"}]}} → 202 {"server": {id, links, adminPass}}
    GET    /compute/v2.1/servers[/detail]?name=REGEX → the project's servers whose name matches
    GET    /compute/v2.1/servers/{id}    → status BUILD → ACTIVE (addresses[net] = [{addr, version,
                                          "OS-EXT-IPS:type": "fixed"}]) | ERROR (with fault) | 404
    DELETE /compute/v2.1/servers/{id}    → 204; the server is gone   (servers are the token's project's)
    GET    /network/v2.0/networks?name=  → {"networks": [...]}

A server's "machine" is a real sshd (tests/support/simulators/sshvm.py) on its fixed
IP (a distinct 127.0.0.N) and `ssh_port`, started `sshd_delay` after ACTIVE,
with cloud-config user-data's ssh_keys.ed25519_private as host key and the
key pair's public key as root's authorized key. `vm_fault` makes new servers
go to ERROR, stay in BUILD, never get an sshd, or serve another host key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import yaml

from support.simulators.sshvm import SshVm, VmFault, allocate_address, release_address

VALIDATION_SECONDS = 5.0
"""How long a token Keystone accepted is taken as valid without asking again (bounded by its expiry)."""


class NovaSimulator:
    def __init__(self, keystone: str, glance: str, admin_token: Callable[[], str]) -> None:
        """keystone: Keystone's v3 URL; glance: Glance's URL; admin_token(): a token to validate others with."""
        self.keystone, self.glance, self.admin_token = keystone.rstrip("/"), glance.rstrip("/"), admin_token
        self.validated: dict[str, tuple[float, dict[str, Any]]] = {}
        """token → (valid until (monotonic), Keystone's token body)"""
        self.validations = 0
        """How many times Keystone was asked."""
        self.refused = 0
        """How many requests were answered 401."""
        self.flavors = {"1": {"id": "1", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
                        "2": {"id": "2", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}}
        self.networks = {"5f1b6a4e-0000-4000-8000-00000000beef": {
            "id": "5f1b6a4e-0000-4000-8000-00000000beef", "name": "build-net", "status": "ACTIVE"}}
        self.keypairs: dict[tuple[str, str], dict[str, Any]] = {}
        """(user id, name) → key pair"""
        self.servers: dict[str, dict[str, Any]] = {}
        self.deleted_servers: list[str] = []
        self.max_live_servers = 0
        """The most servers that existed at once (to check a provider's limit)."""
        self.ssh_port = 22
        self.vm_fault = VmFault.NONE
        self.sshd_delay = 0.3
        self.machines: list[SshVm] = []
        """Every simulated machine ever started, to check that none is left running."""
        self._vms: dict[str, SshVm] = {}
        self._ips: dict[str, str] = {}
        self._lock = threading.Lock()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                sim._dispatch(self, "POST")

            def do_PUT(self) -> None:
                sim._dispatch(self, "PUT")

            def do_GET(self) -> None:
                sim._dispatch(self, "GET")

            def do_DELETE(self) -> None:
                sim._dispatch(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def compute_url(self) -> str:
        """The catalog's compute endpoint."""
        return self.url + "/compute/v2.1"

    @property
    def network_url(self) -> str:
        """The catalog's network endpoint (novaclient adds /v2.0/networks)."""
        return self.url + "/network"

    def start(self) -> NovaSimulator:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="nova-sim").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for server_id in list(self.servers):
            self._power_off(server_id)

    # --- plumbing -------------------------------------------------------------------------------
    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: Any = None,
               headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if data:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _body(self, h: BaseHTTPRequestHandler) -> bytes:
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?")[0].rstrip("/")
        body = self._body(h)
        if not path.startswith(("/compute/v2.1/", "/network/v2.0/")):
            return self._reply(h, 404, {"error": {"code": 404, "message": "not found"}})
        token = self._token(h.headers.get("X-Auth-Token") or "")
        if token is None:
            with self._lock:
                self.refused += 1
            # keystonemiddleware's answer in front of nova-api
            return self._reply(h, 401, {"error": {"code": 401, "title": "Unauthorized", "message": "The request "
                                                  "you have made requires authentication."}},
                               headers={"WWW-Authenticate": f"Keystone uri=\"{self.keystone}\""})
        if not token.get("project"):
            return self._reply(h, 403, {"forbidden": {"code": 403, "message": "Nova needs a project-scoped token."}})
        if path.startswith("/network/v2.0/"):
            query = parse_qs(urlsplit(h.path).query)
            nets = [n for n in self.networks.values() if n["name"] in query.get("name", [n["name"]])]
            return self._reply(h, 200, {"networks": nets})
        return self._nova(h, method, path.split("/")[3:], body, token, h.headers.get("X-Auth-Token") or "")

    # --- Keystone: who is calling ---------------------------------------------------------------
    def _token(self, token: str) -> dict[str, Any] | None:
        """Keystone's body of a valid token (cached briefly), or None."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self.validated.get(token)
        if cached and cached[0] > now:
            return cached[1]
        resp = requests.get(f"{self.keystone}/auth/tokens", timeout=30,
                            headers={"X-Auth-Token": self.admin_token(), "X-Subject-Token": token})
        with self._lock:
            self.validations += 1
        if resp.status_code != 200:
            with self._lock:
                self.validated.pop(token, None)
            return None
        body: dict[str, Any] = resp.json()["token"]
        left = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp() - time.time()
        with self._lock:
            self.validated[token] = (now + min(VALIDATION_SECONDS, left), body)
        return body

    # --- Nova -----------------------------------------------------------------------------------
    def _not_found(self, h: BaseHTTPRequestHandler, what: str) -> None:
        self._reply(h, 404, {"itemNotFound": {"code": 404, "message": f"{what} could not be found."}})

    def _bad(self, h: BaseHTTPRequestHandler, message: str, status: int = 400) -> None:
        key = "conflictingRequest" if status == 409 else "badRequest"
        self._reply(h, status, {key: {"code": status, "message": message}})

    def _nova(self, h: BaseHTTPRequestHandler, method: str, parts: list[str], body: bytes, token: dict[str, Any],
              raw_token: str) -> None:
        resource, rest = parts[0], parts[1:]
        if resource == "flavors" and method == "GET":
            if rest in ([], ["detail"]):
                return self._reply(h, 200, {"flavors": list(self.flavors.values())})
            flavor = self.flavors.get(rest[0])
            return self._reply(h, 200, {"flavor": flavor}) if flavor else self._not_found(h, f"Flavor {rest[0]}")
        if resource == "os-keypairs":
            return self._keypairs(h, method, rest, body, token["user"]["id"])
        if resource == "servers":
            project = token["project"]["id"]
            if method == "POST" and not rest:
                return self._create_server(h, body, token, raw_token)
            if method == "GET" and rest in ([], ["detail"]):  # ?name= is a regular expression, as in Nova
                pattern = re.compile((parse_qs(urlsplit(h.path).query).get("name") or [""])[0])
                with self._lock:
                    mine = [dict(s) for s in self.servers.values()
                            if s["tenant_id"] == project and pattern.search(s["name"])]
                return self._reply(h, 200, {"servers": mine})
            server = self.servers.get(rest[0]) if rest else None
            if server is None or server["tenant_id"] != project:
                return self._not_found(h, f"Instance {rest[0] if rest else ''}")
            if method == "GET" and len(rest) == 1:
                return self._reply(h, 200, {"server": server})
            if method == "DELETE" and len(rest) == 1:
                self._power_off(server["id"])
                self.deleted_servers.append(server["id"])
                return self._reply(h, 204)
        return self._reply(h, 405, {"message": "method not allowed by this simulator"})

    def _keypairs(self, h: BaseHTTPRequestHandler, method: str, rest: list[str], body: bytes, user: str) -> None:
        if method == "POST" and not rest:
            try:
                pair = json.loads(body)["keypair"]
                name, public = pair["name"], pair["public_key"]
            except (ValueError, KeyError, TypeError):
                return self._bad(h, "Invalid input: keypair name and public_key are required")
            if (user, name) in self.keypairs:
                return self._bad(h, f"Key pair '{name}' already exists.", 409)
            self.keypairs[(user, name)] = {"name": name, "public_key": public, "type": pair.get("type", "ssh"),
                                           "user_id": user, "fingerprint": hashlib.md5(public.encode()).hexdigest()}
            return self._reply(h, 200, {"keypair": self.keypairs[(user, name)]})
        pair = self.keypairs.get((user, rest[0])) if rest else None
        if pair is None:
            return self._not_found(h, f"Keypair {rest[0] if rest else ''}")
        if method == "GET":
            return self._reply(h, 200, {"keypair": pair})
        if method == "DELETE":
            del self.keypairs[(user, pair["name"])]
            return self._reply(h, 202)
        return self._reply(h, 405, {"message": "method not allowed by this simulator"})

    def _image_error(self, image_ref: str, raw_token: str) -> str | None:
        """Why nova-api would refuse imageRef (it asks Glance with the caller's token), or None."""
        resp = requests.get(f"{self.glance}/v2/images/{image_ref}", headers={"X-Auth-Token": raw_token}, timeout=30)
        if resp.status_code != 200:
            return f"Image {image_ref} could not be found."
        if resp.json().get("status") != "active":
            return f"Image {image_ref} is not active."
        return None

    def _create_server(self, h: BaseHTTPRequestHandler, body: bytes, token: dict[str, Any], raw_token: str) -> None:
        try:
            req = json.loads(body)["server"]
            name, image_ref, flavor_ref = req["name"], req["imageRef"], req["flavorRef"]
        except (ValueError, KeyError, TypeError):
            return self._bad(h, "Invalid input for field/attribute server.")
        if refused := self._image_error(str(image_ref), raw_token):
            return self._bad(h, refused)
        if flavor_ref not in self.flavors:
            return self._bad(h, f"Flavor {flavor_ref} could not be found.")
        user = token["user"]["id"]
        key_name = req.get("key_name")
        if key_name and (user, key_name) not in self.keypairs:
            return self._bad(h, "Invalid key_name provided.")
        nets = [n.get("uuid") for n in req.get("networks") or []] or list(self.networks)[:1]
        if any(n not in self.networks for n in nets):
            return self._bad(h, f"Network {nets} could not be found.")
        server_id = str(uuid.uuid4())
        server = {"id": server_id, "name": name, "status": "BUILD", "OS-EXT-STS:vm_state": "building",
                  "tenant_id": token["project"]["id"], "user_id": user,
                  "image": {"id": image_ref}, "flavor": {"id": flavor_ref}, "key_name": key_name,
                  "addresses": {}, "links": [{"rel": "self", "href": f"{self.compute_url}/servers/{server_id}"}],
                  "metadata": req.get("metadata") or {}}
        with self._lock:
            self.servers[server_id] = server
            self.max_live_servers = max(self.max_live_servers, len(self.servers))
            ip = self._ips[server_id] = allocate_address()
        user_data = base64.b64decode(req.get("user_data") or "").decode()
        public = self.keypairs[(user, key_name)]["public_key"] if key_name else ""
        threading.Thread(target=self._boot, args=(server, ip, self.networks[nets[0]]["name"], user_data,
                                                  public, self.vm_fault), daemon=True).start()
        self._reply(h, 202, {"server": {"id": server_id, "links": server["links"], "adminPass": uuid.uuid4().hex,
                                        "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}})

    def _boot(self, server: dict[str, Any], ip: str, net: str, user_data: str, public: str,
              fault: VmFault) -> None:
        """What nova-compute and the guest do: spawn (or fail), then cloud-init installs keys, sshd starts."""
        time.sleep(0.1)
        with self._lock:
            if server["id"] not in self.servers or fault == VmFault.STUCK:
                return  # a stuck server stays BUILD
            if fault == VmFault.FAIL:
                server.update({"status": "ERROR", "OS-EXT-STS:vm_state": "error", "fault": {
                    "code": 500, "message": "No valid host was found. There are not enough hosts available.",
                    "created": "2026-01-01T00:00:00Z"}})
                return
            server.update({"status": "ACTIVE", "OS-EXT-STS:vm_state": "active", "addresses": {net: [
                {"addr": ip, "version": 4, "OS-EXT-IPS:type": "fixed",
                 "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}]}})
        time.sleep(self.sshd_delay)
        config = yaml.safe_load(user_data) if user_data.startswith("#cloud-config") else {}
        host_key = ((config or {}).get("ssh_keys") or {}).get("ed25519_private", "")
        machine = SshVm(ip, self.ssh_port, host_key, public, fault if host_key else VmFault.WRONG_HOST_KEY)
        with self._lock:
            if server["id"] not in self.servers:
                return
            self._vms[server["id"]] = machine
            self.machines.append(machine)
        try:
            machine.start()
        except RuntimeError:
            if server["id"] in self.servers:
                raise
        if server["id"] not in self.servers:  # deleted while its sshd was starting
            machine.stop()

    def _power_off(self, server_id: str) -> None:
        with self._lock:
            self.servers.pop(server_id, None)
            machine = self._vms.pop(server_id, None)
            ip = self._ips.pop(server_id, None)
        if machine is not None:
            machine.stop()
        if ip:
            release_address(ip)
