"""E2E launch fixtures: the cloud recipe's disk (built once per session, cached across sessions). The hpc
target's netboot launch runs in tests/e2e/register/test_register_debian_e2e.py, on its registration."""

from pathlib import Path

import pytest
from support.built_images import build_cloud_image


@pytest.fixture(scope="session")
def cloud_qcow2() -> Path:
    return build_cloud_image() / "debian-bookworm-cloud.qcow2"

