"""Register integration fixtures live in register_sites.py (importable by the tests by that name); the qemu
builder bundle (adapt's default sandbox) comes from tests/integration/builders/qemu_env.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "builders"))
from qemu_env import qemu_bundle  # noqa: E402, F401
from register_sites import bad_tarball, clean_tarball, moto_url, repos, sites  # noqa: E402, F401
