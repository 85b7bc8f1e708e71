"""SIMULATOR of OpenNebula's XML-RPC image API (oned cannot run here) — for Rain's register tests.

Speaks the real wire protocol (XML-RPC over HTTP at /RPC2) and reproduces the
documented request and response shapes of the calls Rain uses:

    one.image.allocate(session, template, datastore_id) -> [True, image_id, 0] | [False, message, errcode]
    one.image.info(session, image_id, decrypt)         -> [True, "<IMAGE>...</IMAGE>", 0] | [False, ...]
    one.image.delete(session, image_id)                -> [True, image_id, 0] | [False, ...]

session is "user:password". An allocated image starts LOCKED (4); a worker
fetches its PATH (http(s) URL or local path) like the datastore's cp driver,
then the image becomes READY (1) or ERROR (5, with TEMPLATE/ERROR).
Error codes: AUTHENTICATION 0x0100, AUTHORIZATION 0x0200, NO_EXISTS 0x0400, ACTION 0x0800.
"""

from __future__ import annotations

import hashlib
import re
import threading
import urllib.request
from dataclasses import dataclass, field
from xml.sax.saxutils import escape
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION = 0x0100, 0x0200, 0x0400, 0x0800


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
        self.server = SimpleXMLRPCServer(("127.0.0.1", 0), _Handler, allow_none=True, logRequests=False)
        for name in ("allocate", "info", "delete"):
            self.server.register_function(getattr(self, f"_{name}"), f"one.image.{name}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"

    def start(self) -> OpenNebulaSimulator:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="one-sim").start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _auth(self, session: str) -> list | None:
        user, _, password = session.partition(":")
        if self.users.get(user) != password:
            return [False, "[one.image] User couldn't be authenticated, aborting call.", AUTHENTICATION]
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
