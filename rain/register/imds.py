"""An EC2-style instance metadata service (IMDSv2 only) on 127.0.0.1 for boot tests.

The EC2 boot test must hand the SSH key over the way EC2 does: the guest
reaches 169.254.169.254:80, which QEMU's user network forwards (guestfwd) to
this server. Like an instance with IMDSv1 disabled, every GET needs the token
from `PUT /latest/api/token` (header X-aws-ec2-metadata-token-ttl-seconds),
else 401. The tree served is what cloud-init 22.4's DataSourceEc2 crawls: any
of the API versions it probes (2021-03-23, 2018-09-24, 2016-09-02, 2009-04-04,
latest) + meta-data/ (directories listed one entry a line, sub-directories
with a trailing /, public keys as `0=name`), user-data (404 when none),
dynamic/instance-identity/document. Requests are recorded (method, path,
status) so a test can show the token came first.

QEMU's guestfwd to a `tcp:` chardev connects once, when QEMU starts, and
carries every guest connection to 169.254.169.254:80 over that one stream
(`cmd:` would start a process per connection, which `-sandbox spawn=deny`
forbids). So the server must be listening before QEMU starts, answers with
Content-Length on HTTP/1.1 and never closes the stream itself; QEMU's
`reconnect=1` covers the stream ending anyway.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rain.register.seeds import GuestNet, hostname, public_key

TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
VERSIONS = ("latest", "2021-03-23", "2018-09-24", "2016-09-02", "2009-04-04")
GUEST_ADDRESS = "169.254.169.254"
USER_NETWORK = "169.254.0.0/16"
"""QEMU's user network only forwards guest addresses inside its own network, so an EC2 boot test runs
the guest in the link-local network, where QEMU's defaults put it at 169.254.2.15 (gateway .2.2, DNS .2.3)."""
EC2_NET = GuestNet(ip="169.254.2.15", mask="255.255.0.0", gateway="169.254.2.2", dns="169.254.2.3")

Tree = dict[str, Any]


@dataclass(frozen=True)
class Instance:
    """What the metadata service says about the one instance it serves."""

    key: str
    instance_id: str = "i-0123456789abcdef0"
    host: str = "ip-169-254-2-15"
    image_id: str = "ami-0123456789abcdef0"
    instance_type: str = "t3.micro"
    region: str = "us-east-1"
    user_data: str | None = None
    net: GuestNet = EC2_NET

    def tree(self) -> Tree:
        """The metadata tree: dicts are directories, strings are leaves."""
        public_key(self.key)
        hostname(self.host)
        mac = self.net.mac
        iface = {"device-number": "0", "interface-id": "eni-0123456789abcdef0", "local-hostname": self.host,
                 "local-ipv4s": self.net.ip, "mac": mac, "subnet-id": "subnet-01234567",
                 "subnet-ipv4-cidr-block": USER_NETWORK, "vpc-id": "vpc-01234567",
                 "vpc-ipv4-cidr-block": USER_NETWORK, "vpc-ipv4-cidr-blocks": USER_NETWORK}
        meta = {
            "ami-id": self.image_id, "ami-launch-index": "0", "ami-manifest-path": "(unknown)",
            "block-device-mapping": {"ami": "/dev/xvda", "root": "/dev/xvda"},
            "hostname": self.host, "instance-action": "none", "instance-id": self.instance_id,
            "instance-life-cycle": "on-demand", "instance-type": self.instance_type,
            "local-hostname": self.host, "local-ipv4": self.net.ip, "mac": mac,
            "network": {"interfaces": {"macs": {mac: iface}}},
            "placement": {"availability-zone": f"{self.region}a", "region": self.region},
            "public-keys": {"0": {"openssh-key": self.key}},
            "reservation-id": "r-0123456789abcdef0", "security-groups": "default",
            "services": {"domain": "amazonaws.com", "partition": "aws"},
        }
        document = {"accountId": "000000000000", "architecture": "x86_64", "availabilityZone": f"{self.region}a",
                    "imageId": self.image_id, "instanceId": self.instance_id, "instanceType": self.instance_type,
                    "privateIp": self.net.ip, "region": self.region, "version": "2017-09-30"}
        tree: Tree = {"meta-data": meta, "dynamic": {"instance-identity": {"document": json.dumps(document)}}}
        if self.user_data is not None:
            tree["user-data"] = self.user_data
        return tree


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


@dataclass
class Imds:
    """A running service: `port` on 127.0.0.1, `requests` as they came."""

    port: int
    requests: list[Request]


def lookup(tree: Tree, path: str) -> str | None:
    """The body for GET `path` (after the version), or None for 404. Directories list their entries."""
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, dict):
            return None
        if part not in node:
            return None
        node = node[part]
    if isinstance(node, str):
        return node
    if node is tree.get("meta-data", {}).get("public-keys"):
        return "\n".join(f"{i}=rain" for i in node)  # EC2 lists keys as index=keypair-name
    return "\n".join(f"{name}/" if isinstance(child, dict) else name for name, child in node.items())


def _handler(tree: Tree, tokens: set[str], log: list[Request], lock: threading.Lock) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            """Answer requests on this connection until it ends, whatever `Connection:` says: QEMU's
            guestfwd opens ONE connection at start and sends every guest connection's bytes down it."""
            while True:
                self.handle_one_request()
                if not getattr(self, "raw_requestline", b"") or self.wfile.closed:
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: str = "", ctype: str = "text/plain") -> None:
            with lock:
                log.append(Request(self.command, self.path, status))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/latest/api/token":
                return self._reply(404 if self.path.split("/")[1:2] == ["latest"] else 403)
            ttl = self.headers.get(TOKEN_TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._reply(400, "missing or invalid " + TOKEN_TTL_HEADER)
            token = secrets.token_urlsafe(32)
            with lock:
                tokens.add(token)
            self._reply(200, token)

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                valid = self.headers.get(TOKEN_HEADER, "") in tokens
            if not valid:
                return self._reply(401)
            version, _, rest = self.path.lstrip("/").partition("/")
            if version not in VERSIONS:
                return self._reply(404)
            if not rest:
                return self._reply(200, "\n".join(f"{k}/" if isinstance(v, dict) else k for k, v in tree.items()))
            body = lookup(tree, rest)
            if body is None:
                return self._reply(404)
            self._reply(200, body, "application/json" if rest.endswith("document") else "text/plain")

    return Handler


@contextlib.contextmanager
def serve(instance: Instance) -> Iterator[Imds]:
    """Run the service on a free 127.0.0.1 port for the block's duration."""
    log: list[Request] = []
    handler = _handler(instance.tree(), set(), log, threading.Lock())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="rain-imds", daemon=True)
    thread.start()
    try:
        yield Imds(server.server_address[1], log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
