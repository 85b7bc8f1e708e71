"""The real OpenStack the tests publish to: Keystone and Glance from PyPI, on 127.0.0.1, once per session.

scripts/setup-openstack.sh installs them into a virtualenv of their own
(.venv-openstack, or RAIN_OPENSTACK_VENV). Here each is configured the way a
small site would be (sqlite, fernet tokens, Glance's file store and its
default policies behind keystonemiddleware's auth_token) and served by
gunicorn. Keystone parses sys.argv as its own options, so gunicorn gets no
arguments: it reads gunicorn.conf.py from its working directory.

Bootstrap: the admin project and user (keystone-manage bootstrap), the image
service and its endpoints in region RegionOne, a `service` project with the
`glance` user, and the users the tests act as:

    alice  member of project rain    (may create and delete images there)
    bob    reader of project rain    (may look, not create)
    carol  member of project other

Who publishes here: the openstack target's own tests (integration/register/
test_openstack_glance.py) and the register pipeline tests, whose `sites`
(support/sites.py) log in as alice, read Glance for what was published and
delete every image left at teardown. Nova cannot run here (it needs conductor,
scheduler, compute, placement, a message bus and Neutron), so the openstack
builder boots on support.simulators.nova: `endpoints()` lists that simulator
in this Keystone's catalog (compute and network) while a test runs, it checks
each token with this Keystone and each imageRef with this Glance, and the
builder finds its image (`upload_image`) in this Glance.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from rain.waiting import Deadline, poll

SOURCE = Path(__file__).resolve().parents[2]
REGION = "RegionOne"
SIZE_CAP = 1 << 30
USERS = {"alice": ("rain", "member"), "bob": ("rain", "reader"), "carol": ("other", "member")}


def venv() -> Path:
    path = Path(os.environ.get("RAIN_OPENSTACK_VENV") or SOURCE / ".venv-openstack")
    assert (path / "bin" / "gunicorn").exists(), f"{path} has no Keystone/Glance: run scripts/setup-openstack.sh"
    return path


def password(user: str) -> str:
    return f"{user}-secret-pw"


@dataclass
class Cloud:
    root: Path
    keystone: str
    """Keystone's v3 URL, as a targets file's auth_url."""
    glance: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    projects: dict[str, str] = field(default_factory=dict)
    """project name → id"""
    users: dict[str, str] = field(default_factory=dict)
    """user name → id"""
    _tokens: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    def token(self, user: str = "admin", project: str | None = None) -> str:
        """A token of the user's (cached for ten minutes: Keystone's last an hour here)."""
        project = project or (USERS[user][0] if user in USERS else "admin")
        cached = self._tokens.get((user, project))
        if cached and time.monotonic() - cached[0] < 600:
            return cached[1]
        token = self._new_token(user, project)
        self._tokens[(user, project)] = (time.monotonic(), token)
        return token

    def _new_token(self, user: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password(user)}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        resp = requests.post(f"{self.keystone}/auth/tokens", json=body, timeout=30)
        resp.raise_for_status()
        return resp.headers["X-Subject-Token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, user: str = "admin") -> Any:
        """Keystone's API as `user` (admin by default)."""
        resp = requests.request(method, f"{self.keystone}{path}", json=body, timeout=30,
                                headers={"X-Auth-Token": self.token(user)})
        assert resp.status_code < 300, f"Keystone {method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else {}

    def app_credential(self, user: str) -> tuple[str, str]:
        """A new application credential of the user's, for the user's project: (id, secret)."""
        made = self.call("POST", f"/users/{self.users[user]}/application_credentials",
                         {"application_credential": {"name": f"rain-{uuid.uuid4().hex[:8]}"}}, user=user)
        return made["application_credential"]["id"], made["application_credential"]["secret"]

    @contextmanager
    def region(self, name: str, glance_url: str) -> Iterator[None]:
        """A catalog region `name` whose Glance is at glance_url (a relay, a port nothing listens on)."""
        self.call("POST", "/regions", {"region": {"id": name}})
        service = self.call("GET", "/services?type=image")["services"][0]["id"]
        endpoint = self.call("POST", "/endpoints", {"endpoint": {
            "service_id": service, "interface": "public", "url": glance_url, "region_id": name}})["endpoint"]["id"]
        try:
            yield
        finally:
            self.call("DELETE", f"/endpoints/{endpoint}")
            self.call("DELETE", f"/regions/{name}")

    def images(self, user: str = "admin") -> list[dict[str, Any]]:
        """Every image the user sees in Glance (admin: all of them)."""
        resp = requests.get(f"{self.glance}/v2/images", headers={"X-Auth-Token": self.token(user)},
                            params={"limit": 1000}, timeout=30)
        resp.raise_for_status()
        return list(resp.json()["images"])

    def image(self, image_id: str, user: str = "admin") -> requests.Response:
        return self.image_as(image_id, self.token(user))

    def image_as(self, image_id: str, token: str) -> requests.Response:
        return requests.get(f"{self.glance}/v2/images/{image_id}", headers={"X-Auth-Token": token}, timeout=30)

    def delete_all_images(self) -> None:
        for image in self.images():
            requests.delete(f"{self.glance}/v2/images/{image['id']}", headers={"X-Auth-Token": self.token()},
                            timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def service(self, type_: str, name: str) -> str:
        """The id of the catalog's service of that type, made on first use (so once per session)."""
        found = self.call("GET", f"/services?type={type_}")["services"]
        if found:
            return str(found[0]["id"])
        return str(self.call("POST", "/services", {"service": {"type": type_, "name": name}})["service"]["id"])

    @contextmanager
    def endpoints(self, type_: str, name: str, url: str) -> Iterator[None]:
        """Service `type_` (made if the catalog has none) at url: public, internal and admin endpoints in
        RegionOne, removed on exit. Tokens issued meanwhile list it in their catalog."""
        service = self.service(type_, name)
        made = [self.call("POST", "/endpoints", {"endpoint": {
            "service_id": service, "interface": interface, "url": url, "region_id": REGION}})["endpoint"]["id"]
            for interface in ("public", "internal", "admin")]
        try:
            yield
        finally:
            for endpoint in made:
                self.call("DELETE", f"/endpoints/{endpoint}")

    def upload_image(self, name: str, path: Path, user: str = "alice", disk_format: str = "qcow2") -> str:
        """A private image of the user's project made from the file at path, once Glance says it is active;
        returns its id."""
        headers = {"X-Auth-Token": self.token(user)}
        made = requests.post(f"{self.glance}/v2/images", headers=headers, timeout=30, json={
            "name": name, "disk_format": disk_format, "container_format": "bare", "visibility": "private"})
        assert made.status_code == 201, f"Glance: {made.status_code} {made.text}"
        image_id = str(made.json()["id"])
        with open(path, "rb") as f:
            put = requests.put(f"{self.glance}/v2/images/{image_id}/file", data=f, timeout=120,
                               headers={**headers, "Content-Type": "application/octet-stream"})
        assert put.status_code == 204, f"Glance upload: {put.status_code} {put.text}"
        assert self.image(image_id, user).json()["status"] == "active"
        return image_id

    def delete_image(self, image_id: str) -> None:
        """Deletes the image (as admin) if it is still there."""
        resp = requests.delete(f"{self.glance}/v2/images/{image_id}", headers={"X-Auth-Token": self.token()},
                               timeout=30)
        assert resp.status_code in (204, 404), f"Glance delete: {resp.status_code} {resp.text}"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv[:3]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def _serve(cloud: Cloud, where: Path, app: str, env: dict[str, str], tls: Tls | None = None) -> int:
    """gunicorn serving `app` on a port the kernel picks (no race with other tests for a free one), every
    setting in where/gunicorn.conf.py (no argv); returns the port once the app answers. With `tls`, it
    serves HTTPS with that certificate."""
    (where / "gunicorn.conf.py").write_text(textwrap.dedent(f"""\
        wsgi_app = "{app}"
        bind = "127.0.0.1:0"
        workers = 2
        timeout = 900
        errorlog = "{where / 'gunicorn.log'}"
        control_socket_disable = True
        """) + (f'certfile = "{tls.cert}"\nkeyfile = "{tls.key}"\n' if tls else ""))
    scheme = "https" if tls else "http"
    log = open(where / "stdout.log", "wb")
    proc = subprocess.Popen([str(venv() / "bin" / "gunicorn")], cwd=where, env={**os.environ, **env},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    cloud.procs.append(proc)
    port: list[int] = []

    def up() -> bool:
        text = (where / "gunicorn.log").read_text() if (where / "gunicorn.log").exists() else ""
        assert proc.poll() is None, f"{app} exited: {text[-3000:]}"
        if not port:
            found = re.search(r"Listening at: https?://127\.0\.0\.1:(\d+)", text)
            if not found:
                return False
            port.append(int(found.group(1)))
        try:
            return requests.get(f"{scheme}://127.0.0.1:{port[0]}/", timeout=30,
                                verify=str(tls.ca) if tls else True).status_code < 500
        except (requests.ConnectionError, requests.Timeout):  # a loaded machine: the first answer is slow
            return False

    assert poll(up, Deadline.after(180), 0.3), f"{app} did not answer within 180s: see {where / 'gunicorn.log'}"
    return port[0]


def _keystone_conf(where: Path, data: Path | None = None, expiration: int = 3600) -> Path:
    """keystone.conf in `where`; its database and keys are in `data` (default: `where` too)."""
    data = data or where
    conf = where / "keystone.conf"
    conf.write_text(textwrap.dedent(f"""\
        [DEFAULT]
        log_file = {where / 'keystone.log'}
        [database]
        connection = sqlite:///{data / 'keystone.db'}
        [identity]
        # bcrypt's cheapest cost (default 12, about 0.3 s a login here): every test logs in
        password_hash_rounds = 4
        [token]
        provider = fernet
        expiration = {expiration}
        [fernet_tokens]
        key_repository = {data / 'fernet-keys'}
        [fernet_receipts]
        key_repository = {data / 'fernet-receipts'}
        [credential]
        key_repository = {data / 'credential-keys'}
        """))
    return conf


@dataclass(frozen=True)
class Tls:
    ca: Path
    """The private CA's certificate (PEM): what a user's `cacert` names."""
    cert: Path
    key: Path


def _private_ca(where: Path) -> Tls:
    """A CA of the test's own and a certificate it signed for 127.0.0.1 (no system trusts the CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rain test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = Tls(where / "ca.pem", where / "cert.pem", where / "key.pem")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return tls


@dataclass
class EdgeKeystone:
    """A second Keystone on the same database and keys as the cloud's, serving HTTPS with a private CA and
    issuing tokens that last TOKEN_SECONDS (Glance accepts them: the fernet keys are the same)."""

    url: str
    """Its v3 URL (https)."""
    tls: Tls

    def token(self, secret: str, user: str = "alice", project: str = "rain") -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": secret}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        resp = requests.post(f"{self.url}/auth/tokens", json=body, timeout=30, verify=str(self.tls.ca))
        resp.raise_for_status()
        return resp.headers["X-Subject-Token"]


TOKEN_SECONDS = 4


def start_edge(cloud: Cloud, root: Path) -> EdgeKeystone:
    where = root / "keystone-edge"
    where.mkdir(parents=True)
    tls = _private_ca(where)
    conf = _keystone_conf(where, data=cloud.root / "keystone", expiration=TOKEN_SECONDS)
    port = _serve(cloud, where, "keystone.wsgi.api:application", {"OS_KEYSTONE_CONFIG_FILES": str(conf)}, tls)
    return EdgeKeystone(f"https://127.0.0.1:{port}/v3", tls)


def _glance_conf(where: Path, keystone: str) -> None:
    for d in ("images", "staging", "tasks"):
        (where / d).mkdir()
    paste = next((venv() / "etc" / "glance").glob("glance-api-paste.ini"))
    (where / "glance-api-paste.ini").write_text(paste.read_text())
    (where / "glance-api.conf").write_text(textwrap.dedent(f"""\
        [DEFAULT]
        log_file = {where / 'glance.log'}
        enabled_backends = fs:file
        # a small site's cap (Glance's default is 1 TiB); Rain's test images are far below it
        image_size_cap = {SIZE_CAP}
        [database]
        connection = sqlite:///{where / 'glance.db'}
        [glance_store]
        default_backend = fs
        [fs]
        filesystem_store_datadir = {where / 'images'}/
        [os_glance_staging_store]
        filesystem_store_datadir = {where / 'staging'}/
        [os_glance_tasks_store]
        filesystem_store_datadir = {where / 'tasks'}/
        [keystone_authtoken]
        www_authenticate_uri = {keystone}
        auth_url = {keystone}
        auth_type = password
        project_domain_name = Default
        user_domain_name = Default
        project_name = service
        username = glance
        password = {password('glance')}
        [paste_deploy]
        flavor = keystone
        """))


def _bootstrap(cloud: Cloud, glance_port: int) -> None:
    """The image service in the catalog, the glance service user, the projects and users of USERS."""
    headers = {"X-Auth-Token": cloud.token()}

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = requests.request(method, f"{cloud.keystone}{path}", json=body, headers=headers, timeout=30)
        assert resp.status_code < 300, f"Keystone {method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else {}

    roles = {r["name"]: r["id"] for r in call("GET", "/roles")["roles"]}
    service = call("POST", "/services", {"service": {"type": "image", "name": "glance"}})["service"]
    for interface in ("public", "internal", "admin"):
        call("POST", "/endpoints", {"endpoint": {"service_id": service["id"], "interface": interface,
                                                 "url": f"http://127.0.0.1:{glance_port}", "region_id": REGION}})
    members = {"service": [("glance", "admin")]}
    for user, (project, role) in USERS.items():
        members.setdefault(project, []).append((user, role))
    for project, users in members.items():
        pid = call("POST", "/projects", {"project": {"name": project, "domain_id": "default"}})["project"]["id"]
        cloud.projects[project] = pid
        for user, role in users:
            uid = call("POST", "/users", {"user": {"name": user, "password": password(user),
                                                   "domain_id": "default"}})["user"]["id"]
            cloud.users[user] = uid
            call("PUT", f"/projects/{pid}/users/{uid}/roles/{roles[role]}")
    cloud.projects["admin"] = call("GET", "/projects?name=admin")["projects"][0]["id"]


def start(root: Path) -> Cloud:
    """Keystone and Glance configured, bootstrapped and serving under root (stop() ends them)."""
    bin_ = venv() / "bin"
    cloud = Cloud(root, "", "")
    ks, gl = root / "keystone", root / "glance"
    ks.mkdir(parents=True)
    gl.mkdir(parents=True)
    try:
        conf = _keystone_conf(ks)
        manage = [str(bin_ / "keystone-manage"), "--config-file", str(conf)]
        _run([*manage, "db_sync"], ks)
        for setup in ("fernet_setup", "credential_setup"):
            _run([*manage, setup, "--keystone-user", "root", "--keystone-group", "root"], ks)
        port = _serve(cloud, ks, "keystone.wsgi.api:application", {"OS_KEYSTONE_CONFIG_FILES": str(conf)})
        cloud.keystone = f"http://127.0.0.1:{port}/v3"
        _run([*manage, "bootstrap", "--bootstrap-password", password("admin"), "--bootstrap-region-id", REGION,
              *[a for i in ("admin", "public", "internal") for a in (f"--bootstrap-{i}-url", cloud.keystone)]], ks)
        _glance_conf(gl, cloud.keystone)
        _run([str(bin_ / "glance-manage"), "--config-file", str(gl / "glance-api.conf"), "db_sync"], gl)
        port = _serve(cloud, gl, "glance.wsgi.api:application", {"OS_GLANCE_CONFIG_DIR": str(gl)})
        cloud.glance = f"http://127.0.0.1:{port}"
        _bootstrap(cloud, port)
    except BaseException:
        cloud.stop()
        raise
    return cloud


@pytest.fixture(scope="session")
def openstack_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """The real Keystone and Glance (see the module doc), started once for the session."""
    t0 = time.monotonic()
    cloud = start(tmp_path_factory.mktemp("openstack"))
    print(f"\nreal Keystone + Glance up in {time.monotonic() - t0:.1f}s")
    yield cloud
    cloud.stop()


@pytest.fixture(scope="session")
def edge_keystone(openstack_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> EdgeKeystone:
    """HTTPS with a private CA and 4-second tokens, in front of the same Keystone (see EdgeKeystone); it is
    stopped with the cloud."""
    return start_edge(openstack_cloud, tmp_path_factory.mktemp("openstack-edge"))


@pytest.fixture
def glance(openstack_cloud: Cloud) -> Iterator[Cloud]:
    """The real cloud, with no image left in Glance after the test (a test that leaves one fails)."""
    yield openstack_cloud
    left = openstack_cloud.images()
    openstack_cloud.delete_all_images()
    assert left == [], f"images left in Glance: {[(i['name'], i['status']) for i in left]}"
