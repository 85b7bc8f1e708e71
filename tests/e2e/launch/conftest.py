"""E2E launch fixtures: the cloud recipe's disk and the kernel recipe's tree (built once per session, cached
across sessions), and the register tests' sites (the hpc site's provisioning directory)."""

from pathlib import Path

import pytest
from support.built_images import build_cloud_image, build_debian_tarball
from support.openstack_cloud import openstack_cloud  # noqa: F401  (the sites fixture needs it)
from support.sites import moto_url, sites  # noqa: F401


@pytest.fixture(scope="session")
def cloud_qcow2() -> Path:
    return build_cloud_image() / "debian-bookworm-cloud.qcow2"


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """recipes/debian-bookworm-kernel.yaml's tree (cached): what the hpc site netboots."""
    return build_debian_tarball()
