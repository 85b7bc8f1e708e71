"""E2E register fixtures: the real Debian image (built once, cached) and the integration sites."""

from pathlib import Path

import pytest
from support.builders import qemu_bundle  # noqa: F401  (adapt's sandbox: the qemu builder VM)
from support.built_images import build_cloud_image, build_debian_tarball
from support.openstack_cloud import openstack_cloud  # noqa: F401  (the openstack site: real Keystone + Glance)
from support.sites import moto_url, repos, sites  # noqa: F401


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """Debian bookworm minbase + linux-image-amd64 + systemd, from the host's apt sources (cached)."""
    return build_debian_tarball()


@pytest.fixture(scope="session")
def cloud_image() -> Path:
    """recipes/debian-bookworm-cloud.yaml built once (cached): the directory with its qcow2 and tar.zst."""
    return build_cloud_image()
