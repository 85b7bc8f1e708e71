"""SIMULATOR of OpenStack Keystone v3, Glance v2 and Nova (a real cloud cannot run here) — for Rain's tests.

Real Glance from PyPI needs Keystone, a database and a WSGI stack; it does not
start quickly here, so the register tests talk to this simulator instead. It
speaks the real REST protocol for the calls Rain makes:

    POST   /v3/auth/tokens              password auth + project scope → 201, X-Subject-Token, token.catalog
    POST   /v2/images                   create (JSON: name, disk_format, container_format, visibility, props)
                                        → 201, image with status "queued"
    PUT    /v2/images/{id}/file         upload (application/octet-stream) → 204; image "active" with
                                        size, checksum (md5), os_hash_algo "sha512", os_hash_value
    GET    /v2/images/{id}              → 200 image JSON | 404
    DELETE /v2/images/{id}              → 204 | 404

    GET    /v2/images?name=...          → 200 {"images": [...]} (name look-up, as novaclient's find_image does)

Nova (compute v2.1 under /compute/v2.1, in the catalog as type "compute") and
the one Neutron call novaclient makes to find a network by name (under /network):

    GET    /compute/v2.1/flavors/{id}, /flavors, /flavors/detail   → flavor(s) | 404 itemNotFound
    POST   /compute/v2.1/os-keypairs     import {"keypair": {name, public_key}} → 200 | 409 if the name is taken
    GET    /compute/v2.1/os-keypairs/{name}; DELETE → 202 | 404
    POST   /compute/v2.1/servers         {"server": {name, imageRef, flavorRef, key_name, user_data (base64),
                                          networks: [{"uuid"}]}} → 202 {"server": {id, links, adminPass}}
    GET    /compute/v2.1/servers/{id}    → status BUILD → ACTIVE (addresses[net] = [{addr, version,
                                          "OS-EXT-IPS:type": "fixed"}]) | ERROR (with fault) | 404
    DELETE /compute/v2.1/servers/{id}    → 204; the server is gone
    GET    /network/v2.0/networks?name=  → {"networks": [...]}

A server's "machine" is a real sshd (tests/support/simulators/sshvm.py) on its fixed
IP (a distinct 127.0.0.N) and `ssh_port`, started `sshd_delay` after ACTIVE,
with cloud-config user-data's ssh_keys.ed25519_private as host key and the
key pair's public key as root's authorized key. `vm_fault` makes new servers
go to ERROR, never get an sshd, or serve another host key. Servers and key
pairs are checked against the caller's token like the images.

Every Glance and Nova call needs a valid X-Auth-Token. `fail_upload` makes the
upload answer 500 (the image stays "queued") to test Rain's undo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from support.simulators.sshvm import SshVm, VmFault, allocate_address, release_address

RESERVED = {"name", "disk_format", "container_format", "visibility", "id", "status", "size", "checksum",
            "os_hash_algo", "os_hash_value", "tags", "min_disk", "min_ram", "protected"}


class OpenStackSimulator:
    def __init__(self, username: str = "rain", password: str = "secret", project: str = "images",
                 region: str = "RegionOne") -> None:
        self.username, self.password, self.project, self.region = username, password, project, region
        self.tokens: set[str] = set()
        self.images: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.fail_upload = False
        self.flavors = {"1": {"id": "1", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
                        "2": {"id": "2", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40}}
        self.networks = {"5f1b6a4e-0000-4000-8000-00000000beef": {
            "id": "5f1b6a4e-0000-4000-8000-00000000beef", "name": "build-net", "status": "ACTIVE"}}
        self.keypairs: dict[str, dict[str, Any]] = {}
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
    def auth_url(self) -> str:
        return self.url + "/v3"

    def start(self) -> OpenStackSimulator:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="openstack-sim").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for server_id in list(self.servers):
            self._power_off(server_id)

    def add_image(self, name: str) -> str:
        """An active Glance image (the builder image a cloud would have); returns its id."""
        image: dict[str, Any] = {"name": name, "id": str(uuid.uuid4()), "status": "active", "disk_format": "qcow2",
                                 "container_format": "bare", "visibility": "private", "size": 1 << 20}
        self.images[image["id"]] = image
        return str(image["id"])

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
        if method == "POST" and path == "/v3/auth/tokens":
            return self._auth(h)
        if not path.startswith(("/v2/images", "/compute/v2.1/", "/network/v2.0/")):
            return self._reply(h, 404, {"error": {"code": 404, "message": "not found"}})
        if h.headers.get("X-Auth-Token") not in self.tokens:
            self._body(h)
            return self._reply(h, 401, {"error": {"code": 401, "message": "The request you have made requires "
                                                  "authentication."}})
        query = parse_qs(urlsplit(h.path).query)
        if path.startswith("/compute/v2.1/"):
            return self._nova(h, method, path.split("/")[3:], self._body(h))
        if path.startswith("/network/v2.0/"):
            nets = [n for n in self.networks.values() if n["name"] in query.get("name", [n["name"]])]
            return self._reply(h, 200, {"networks": nets})
        parts = path.split("/")[3:]  # after /v2/images
        if method == "GET" and not parts:
            names = query.get("name")
            return self._reply(h, 200, {"images": [i for i in self.images.values()
                                                   if not names or i["name"] in names]})
        if method == "POST" and not parts:
            return self._create(h)
        image = self.images.get(parts[0]) if parts else None
        if image is None:
            self._body(h)
            return self._reply(h, 404, {"message": "No image found", "code": "404 Not Found"})
        if method == "PUT" and parts[1:] == ["file"]:
            return self._upload(h, image)
        if method == "GET" and len(parts) == 1:
            return self._reply(h, 200, image)
        if method == "DELETE" and len(parts) == 1:
            del self.images[image["id"]]
            self.deleted.append(image["id"])
            return self._reply(h, 204)
        return self._reply(h, 405, {"message": "method not allowed"})

    # --- Keystone -------------------------------------------------------------------------------
    def _auth(self, h: BaseHTTPRequestHandler) -> None:
        try:
            auth = json.loads(self._body(h))["auth"]
            user = auth["identity"]["password"]["user"]
            project = auth["scope"]["project"]["name"]
        except (ValueError, KeyError, TypeError):
            return self._reply(h, 400, {"error": {"code": 400, "message": "Malformed auth request"}})
        if (user.get("name"), user.get("password"), project) != (self.username, self.password, self.project):
            return self._reply(h, 401, {"error": {"code": 401, "message": "The request you have made requires "
                                                  "authentication.", "title": "Unauthorized"}})
        token = uuid.uuid4().hex
        self.tokens.add(token)
        catalog = [{"type": "identity", "name": "keystone", "endpoints": [
                        {"interface": "public", "region": self.region, "region_id": self.region,
                         "url": self.auth_url}]},
                   {"type": "image", "name": "glance", "endpoints": [
                       {"interface": i, "region": self.region, "region_id": self.region, "url": self.url}
                       for i in ("public", "internal", "admin")]},
                   {"type": "compute", "name": "nova", "endpoints": [
                       {"interface": i, "region": self.region, "region_id": self.region,
                        "url": self.url + "/compute/v2.1"} for i in ("public", "internal", "admin")]},
                   {"type": "network", "name": "neutron", "endpoints": [
                       {"interface": i, "region": self.region, "region_id": self.region,
                        "url": self.url + "/network"} for i in ("public", "internal", "admin")]}]
        self._reply(h, 201, {"token": {"methods": ["password"], "catalog": catalog,
                                       "project": {"name": project}, "user": {"name": user["name"]},
                                       "expires_at": "2099-01-01T00:00:00.000000Z"}},
                    headers={"X-Subject-Token": token})

    # --- Glance ---------------------------------------------------------------------------------
    def _create(self, h: BaseHTTPRequestHandler) -> None:
        try:
            body = json.loads(self._body(h))
        except ValueError:
            return self._reply(h, 400, {"message": "Body is not JSON"})
        if body.get("disk_format") not in ("qcow2", "raw", "vmdk", "vhd", "iso", "ami"):
            return self._reply(h, 400, {"message": f"Invalid disk format {body.get('disk_format')!r}"})
        bad = [k for k, v in body.items() if k not in RESERVED and not isinstance(v, str)]
        if bad:
            return self._reply(h, 400, {"message": f"Additional properties must be strings: {bad}"})
        image = {**body, "id": str(uuid.uuid4()), "status": "queued", "size": None, "checksum": None,
                 "os_hash_algo": None, "os_hash_value": None, "visibility": body.get("visibility", "shared")}
        self.images[image["id"]] = image
        self._reply(h, 201, image, headers={"Location": f"{self.url}/v2/images/{image['id']}"})

    def _upload(self, h: BaseHTTPRequestHandler, image: dict[str, Any]) -> None:
        remaining = int(h.headers.get("Content-Length") or 0)
        md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
        image["status"] = "saving"
        while remaining:
            chunk = h.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
            size += len(chunk)
            md5.update(chunk)
            sha512.update(chunk)
        if self.fail_upload:
            image["status"] = "queued"
            return self._reply(h, 500, {"message": "Error in store configuration. Adding images to store is "
                                                   "disabled."})
        image.update(status="active", size=size, checksum=md5.hexdigest(), os_hash_algo="sha512",
                     os_hash_value=sha512.hexdigest())
        self._reply(h, 204)

    # --- Nova -----------------------------------------------------------------------------------
    def _not_found(self, h: BaseHTTPRequestHandler, what: str) -> None:
        self._reply(h, 404, {"itemNotFound": {"code": 404, "message": f"{what} could not be found."}})

    def _bad(self, h: BaseHTTPRequestHandler, message: str, status: int = 400) -> None:
        key = "conflictingRequest" if status == 409 else "badRequest"
        self._reply(h, status, {key: {"code": status, "message": message}})

    def _nova(self, h: BaseHTTPRequestHandler, method: str, parts: list[str], body: bytes) -> None:
        resource, rest = parts[0], parts[1:]
        if resource == "flavors" and method == "GET":
            if rest in ([], ["detail"]):
                return self._reply(h, 200, {"flavors": list(self.flavors.values())})
            flavor = self.flavors.get(rest[0])
            return self._reply(h, 200, {"flavor": flavor}) if flavor else self._not_found(h, f"Flavor {rest[0]}")
        if resource == "os-keypairs":
            return self._keypairs(h, method, rest, body)
        if resource == "servers":
            if method == "POST" and not rest:
                return self._create_server(h, body)
            server = self.servers.get(rest[0]) if rest else None
            if server is None:
                return self._not_found(h, f"Instance {rest[0] if rest else ''}")
            if method == "GET" and len(rest) == 1:
                return self._reply(h, 200, {"server": server})
            if method == "DELETE" and len(rest) == 1:
                self._power_off(server["id"])
                self.deleted_servers.append(server["id"])
                return self._reply(h, 204)
        return self._reply(h, 405, {"message": "method not allowed by this simulator"})

    def _keypairs(self, h: BaseHTTPRequestHandler, method: str, rest: list[str], body: bytes) -> None:
        if method == "POST" and not rest:
            try:
                pair = json.loads(body)["keypair"]
                name, public = pair["name"], pair["public_key"]
            except (ValueError, KeyError, TypeError):
                return self._bad(h, "Invalid input: keypair name and public_key are required")
            if name in self.keypairs:
                return self._bad(h, f"Key pair '{name}' already exists.", 409)
            self.keypairs[name] = {"name": name, "public_key": public, "type": pair.get("type", "ssh"),
                                   "fingerprint": hashlib.md5(public.encode()).hexdigest()}
            return self._reply(h, 200, {"keypair": self.keypairs[name]})
        pair = self.keypairs.get(rest[0]) if rest else None
        if pair is None:
            return self._not_found(h, f"Keypair {rest[0] if rest else ''}")
        if method == "GET":
            return self._reply(h, 200, {"keypair": pair})
        if method == "DELETE":
            del self.keypairs[pair["name"]]
            return self._reply(h, 202)
        return self._reply(h, 405, {"message": "method not allowed by this simulator"})

    def _create_server(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            req = json.loads(body)["server"]
            name, image_ref, flavor_ref = req["name"], req["imageRef"], req["flavorRef"]
        except (ValueError, KeyError, TypeError):
            return self._bad(h, "Invalid input for field/attribute server.")
        if self.images.get(image_ref, {}).get("status") != "active":
            return self._bad(h, f"Image {image_ref} could not be found.")
        if flavor_ref not in self.flavors:
            return self._bad(h, f"Flavor {flavor_ref} could not be found.")
        key_name = req.get("key_name")
        if key_name and key_name not in self.keypairs:
            return self._bad(h, "Invalid key_name provided.")
        nets = [n.get("uuid") for n in req.get("networks") or []] or list(self.networks)[:1]
        if any(n not in self.networks for n in nets):
            return self._bad(h, f"Network {nets} could not be found.")
        server_id = str(uuid.uuid4())
        server = {"id": server_id, "name": name, "status": "BUILD", "OS-EXT-STS:vm_state": "building",
                  "image": {"id": image_ref}, "flavor": {"id": flavor_ref}, "key_name": key_name,
                  "addresses": {}, "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{server_id}"}],
                  "metadata": req.get("metadata") or {}}
        with self._lock:
            self.servers[server_id] = server
            self.max_live_servers = max(self.max_live_servers, len(self.servers))
            ip = self._ips[server_id] = allocate_address()
        user_data = base64.b64decode(req.get("user_data") or "").decode()
        public = self.keypairs[key_name]["public_key"] if key_name else ""
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
