"""E2E register fixtures: the real Debian image (built once, cached) and the integration sites."""

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[2]
for _p in (_TESTS / "integration" / "register", _TESTS / "integration" / "builders", _TESTS / "unit" / "register",
           _TESTS):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from debian_image import build_cloud_image, build_debian_tarball  # noqa: E402
from qemu_env import qemu_bundle  # noqa: E402, F401  (adapt's sandbox: the qemu builder VM)
from register_sites import moto_url, repos, sites  # noqa: E402, F401


@pytest.fixture(scope="session")
def debian_tarball() -> Path:
    """Debian bookworm minbase + linux-image-amd64 + systemd, from the host's apt sources (cached)."""
    return build_debian_tarball()


@pytest.fixture(scope="session")
def cloud_image() -> Path:
    """recipes/debian-bookworm-cloud.yaml built once (cached): the directory with its qcow2 and tar.zst."""
    return build_cloud_image()
