"""SIMULATOR of OpenStack Keystone v3 and Glance v2 (a real cloud cannot run here) — for Rain's tests.

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

Every Glance call needs a valid X-Auth-Token. `fail_upload` makes the upload
answer 500 (the image stays "queued") to test Rain's undo.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
        if not path.startswith("/v2/images"):
            return self._reply(h, 404, {"error": {"code": 404, "message": "not found"}})
        if h.headers.get("X-Auth-Token") not in self.tokens:
            self._body(h)
            return self._reply(h, 401, {"error": {"code": 401, "message": "The request you have made requires "
                                                  "authentication."}})
        parts = path.split("/")[3:]  # after /v2/images
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
                       for i in ("public", "internal", "admin")]}]
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
