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

Nova cannot run here (it needs conductor, scheduler, compute, placement, a
message bus and Neutron), so builders still boot on support.simulators.openstack.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from rain.waiting import Deadline, poll

SOURCE = Path(__file__).resolve().parents[2]
REGION = "RegionOne"
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

    def token(self, user: str = "admin", project: str | None = None) -> str:
        project = project or (USERS[user][0] if user in USERS else "admin")
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password(user)}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        resp = requests.post(f"{self.keystone}/auth/tokens", json=body, timeout=30)
        resp.raise_for_status()
        return resp.headers["X-Subject-Token"]

    def images(self, user: str = "admin") -> list[dict[str, Any]]:
        """Every image the user sees in Glance (admin: all of them)."""
        resp = requests.get(f"{self.glance}/v2/images", headers={"X-Auth-Token": self.token(user)},
                            params={"limit": 1000}, timeout=30)
        resp.raise_for_status()
        return list(resp.json()["images"])

    def image(self, image_id: str, user: str = "admin") -> requests.Response:
        return requests.get(f"{self.glance}/v2/images/{image_id}", headers={"X-Auth-Token": self.token(user)},
                            timeout=30)

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


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv[:3]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def _serve(cloud: Cloud, where: Path, app: str, env: dict[str, str]) -> int:
    """gunicorn serving `app` on a port the kernel picks (no race with other tests for a free one), every
    setting in where/gunicorn.conf.py (no argv); returns the port once the app answers."""
    (where / "gunicorn.conf.py").write_text(textwrap.dedent(f"""\
        wsgi_app = "{app}"
        bind = "127.0.0.1:0"
        workers = 2
        timeout = 900
        errorlog = "{where / 'gunicorn.log'}"
        control_socket_disable = True
        """))
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
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            if not found:
                return False
            port.append(int(found.group(1)))
        try:
            return requests.get(f"http://127.0.0.1:{port[0]}/", timeout=5).status_code < 500
        except requests.ConnectionError:
            return False

    assert poll(up, Deadline.after(180), 0.3), f"{app} did not answer within 180s: see {where / 'gunicorn.log'}"
    return port[0]


def _keystone_conf(where: Path) -> Path:
    conf = where / "keystone.conf"
    conf.write_text(textwrap.dedent(f"""\
        [DEFAULT]
        log_file = {where / 'keystone.log'}
        [database]
        connection = sqlite:///{where / 'keystone.db'}
        [token]
        provider = fernet
        [fernet_tokens]
        key_repository = {where / 'fernet-keys'}
        [fernet_receipts]
        key_repository = {where / 'fernet-receipts'}
        [credential]
        key_repository = {where / 'credential-keys'}
        """))
    return conf


def _glance_conf(where: Path, keystone: str) -> None:
    for d in ("images", "staging", "tasks"):
        (where / d).mkdir()
    paste = next((venv() / "etc" / "glance").glob("glance-api-paste.ini"))
    (where / "glance-api-paste.ini").write_text(paste.read_text())
    (where / "glance-api.conf").write_text(textwrap.dedent(f"""\
        [DEFAULT]
        log_file = {where / 'glance.log'}
        enabled_backends = fs:file
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


@pytest.fixture
def glance(openstack_cloud: Cloud) -> Iterator[Cloud]:
    """The real cloud, with no image left in Glance after the test (a test that leaves one fails)."""
    yield openstack_cloud
    left = openstack_cloud.images()
    openstack_cloud.delete_all_images()
    assert left == [], f"images left in Glance: {[(i['name'], i['status']) for i in left]}"
