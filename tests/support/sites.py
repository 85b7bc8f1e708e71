"""Target sites for the register tests, all on 127.0.0.1 (fixtures: a conftest.py imports them).

- ec2: moto's real server (EC2 + EBS direct APIs) in a thread, once per session;
- opennebula: the XML-RPC SIMULATOR in simulators/opennebula.py (oned cannot run here);
- openstack: the real Keystone and Glance (openstack_cloud.py, started once per session:
  a conftest.py using `sites` imports `openstack_cloud` too), as alice in project rain;
  the site's `backend` (GlanceView) reads the rain project's images from Glance;
- hpc: provisioning directories in the test's tmp dir.

`sites` writes a targets file naming them (credentials by env var reference) and
gives, per target, `holds(remote_id)` and `published()` to look at the site itself.
At teardown it deletes every image left in Glance (as admin), so no test sees
another's. Images go into the repository with support.repository.upload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from rain.config import Settings
from rain.register.boot import serve_directory
from rain.repository.connect import open_store
from support.images import make_bad_tree, make_tarball, make_tree
from support.openstack_cloud import Cloud, password
from support.simulators.opennebula import OpenNebulaSimulator

TARGETS = ["hpc", "opennebula", "openstack", "ec2"]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Site:
    target: str
    holds: Callable[[str], bool]
    published: Callable[[], int]
    """How many images Rain published there that still exist."""
    backend: Any = None


class GlanceImages(Mapping[str, dict[str, Any]]):
    """id → image as Glance returns it (properties at the top level), for one project, read from the real
    Glance (as admin) at each use: like the simulator's dict, it is live, so `images[publish(...)]` and
    `id in images` see what Glance has when they run."""

    def __init__(self, cloud: Cloud, project: str) -> None:
        self.cloud, self.project = cloud, project

    def _now(self) -> dict[str, dict[str, Any]]:
        owner = self.cloud.projects[self.project]
        return {i["id"]: i for i in self.cloud.images() if i.get("owner") == owner}

    def __getitem__(self, image_id: str) -> dict[str, Any]:
        return self._now()[image_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())

    def __repr__(self) -> str:
        return repr(self._now())


@dataclass
class GlanceView:
    """The openstack site as the real Glance has it now (the `backend` of sites["openstack"])."""

    cloud: Cloud
    project: str = "rain"

    @property
    def images(self) -> GlanceImages:
        return GlanceImages(self.cloud, self.project)

    def holds(self, image_id: str) -> bool:
        resp = self.cloud.image(image_id)
        return resp.status_code == 200 and resp.json()["status"] == "active"


@dataclass
class Sites:
    settings: Settings
    path: Path
    config: dict[str, Any]
    by_target: dict[str, Site]

    def __getitem__(self, target: str) -> Site:
        return self.by_target[target]

    def rewrite(self, target: str, **changes: Any) -> None:
        """Change the default site's settings for `target` in the targets file."""
        self.config[target]["default"].update(changes)
        self.path.write_text(yaml.safe_dump(self.config))


@pytest.fixture
def sites(settings: Settings, tmp_path: Path, moto_url: str, openstack_cloud: Cloud,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Sites]:
    requests.post(f"{moto_url}/moto-api/reset", timeout=30).raise_for_status()  # each test sees its own EC2
    monkeypatch.setenv("RAIN_TEST_ONE_PASSWORD", "opennebula")
    monkeypatch.setenv("RAIN_TEST_OS_PASSWORD", password("alice"))
    monkeypatch.setenv("RAIN_TEST_AWS_KEY", "testing")
    monkeypatch.setenv("RAIN_TEST_AWS_SECRET", "testing")
    one = OpenNebulaSimulator().start()
    glance = GlanceView(openstack_cloud)
    staging = tmp_path / "one-staging"
    staging.mkdir()
    with serve_directory(staging) as staging_port:
        config = {
            "hpc": {"default": {"provision_dir": str(tmp_path / "provision"), "http_url": "http://head.invalid/rain"}},
            "opennebula": {"default": {"endpoint": one.endpoint, "username": "oneadmin",
                                       "password_env": "RAIN_TEST_ONE_PASSWORD", "datastore_id": 1,
                                       "staging_dir": str(staging),
                                       "staging_url": f"http://127.0.0.1:{staging_port}", "timeout": 30}},
            "openstack": {"default": {"auth_url": openstack_cloud.keystone, "username": "alice",
                                      "project_name": "rain", "password_env": "RAIN_TEST_OS_PASSWORD",
                                      "timeout": 30}},
            "ec2": {"default": {"region": "us-east-1", "endpoint_url": moto_url, "workers": 4,
                                "access_key_id_env": "RAIN_TEST_AWS_KEY",
                                "secret_access_key_env": "RAIN_TEST_AWS_SECRET", "timeout": 30}},
        }
        path = tmp_path / "targets.yaml"
        path.write_text(yaml.safe_dump(config))
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        provision = tmp_path / "provision"

        def ec2_published() -> int:
            return len(ec2.describe_images(Owners=["self"], Filters=[
                {"Name": "tag-key", "Values": ["rain:image"]}])["Images"]) + len(ec2.describe_snapshots(
                    OwnerIds=["self"], Filters=[{"Name": "tag-key", "Values": ["rain:image"]}])["Snapshots"])

        def ec2_holds(ami: str) -> bool:
            return any(i["ImageId"] == ami for i in ec2.describe_images(Owners=["self"])["Images"])

        by_target = {
            "hpc": Site("hpc", lambda rid: (provision / rid / "rootfs.squashfs").is_file(),
                        lambda: len([p for p in provision.glob("rain-*") if p.is_dir()]) if provision.exists() else 0),
            "opennebula": Site("opennebula", lambda rid: int(rid) in one.images and one.images[int(rid)].state == 1,
                               lambda: len(one.images), one),
            "openstack": Site("openstack", glance.holds, lambda: len(glance.images), glance),
            "ec2": Site("ec2", ec2_holds, ec2_published, ec2),
        }
        # adapt's installs in a chroot here: these tests are about the pipeline; the e2e tests run them in the
        # qemu builder VM (the default) on a real image
        yield Sites(settings.with_overrides(targets_file=str(path), adapt_builder="local"), path, config, by_target)
    one.stop()
    openstack_cloud.delete_all_images()


@pytest.fixture
def clean_tarball(tmp_path: Path) -> Path:
    return make_tarball(make_tree(tmp_path / "clean-root"), tmp_path / "clean.tar.zst")


@pytest.fixture
def bad_tarball(tmp_path: Path) -> Path:
    return make_tarball(make_bad_tree(tmp_path / "bad-root"), tmp_path / "bad.tar.zst", escape=True)


@pytest.fixture
def repos(sites: Sites) -> Callable[[str], Any]:
    """repos(name) → the repository as that user (the first one, 'admin', is the admin)."""
    opened: dict[str, Any] = {}
    admin = open_store(sites.settings, "admin")
    opened["admin"] = admin

    def get(name: str) -> Any:
        if name not in opened:
            admin.add_user(name)
            opened[name] = open_store(sites.settings, name)
        return opened[name]

    return get
