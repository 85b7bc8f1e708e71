"""`fg-image builder image` from an installed wheel: the qemu builder image is built, stored and prepared.

The installed Rain (support/wheel.py: no checkout on its path) finds the builder
recipe inside its own package, builds it with the real `generate` on the shared
test data dir (so generate's result cache answers when the recipe is unchanged,
as it would for a user's second run), uploads it into this test's database and
prepares its boot bundle. Nothing boots.
"""

from __future__ import annotations

import fcntl
import json
import subprocess

import pytest
import yaml
from support.builders import build_builder_archive, cache_dir
from support.wheel import install_wheel, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(1800)
def test_the_installed_fg_image_builds_stores_and_prepares_the_builder_image(
        rain_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    build_builder_archive()  # the checkout's build: the installed Rain's build must land on the same result
    installed = install_wheel(tmp_path_factory.mktemp("wheel"))
    home = installed.home
    builders = home / "builders.yaml"
    builders.write_text(yaml.safe_dump({"qemu": {"cache_dir": str(home / "bundles")}}))
    env = {**installed.env, "RAIN_DATA_DIR": str(cache_dir().parent / "generate-data"),
           "RAIN_BUILDERS_FILE": str(builders),
           **{k: rain_env[k] for k in ("RAIN_MONGO_URI", "RAIN_MONGO_DB", "RAIN_USER")}}

    with open(cache_dir().parent / ".generated.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        first = subprocess.run([installed.fg_image, "builder", "image"], cwd=home, env=env, capture_output=True,
                               text=True, timeout=1500, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    image_id = first.stdout.strip()
    assert "building the qemu builder image from " + str(installed.venv) in first.stderr, \
        "the recipe came from the installed package"
    assert "✓ build the qemu builder image" in first.stderr
    assert "✓ prepare the qemu builder disk" in first.stderr

    stored = json.loads(run([installed.fg_image, "list", "--name", "rain-builder-debian", "--json"], home, env))
    assert [(i["id"], i["format"], i["status"]) for i in stored] == [(image_id, "tar.zst", "available")]
    bundle = home / "bundles" / image_id
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["image"] == image_id
    for part in ("disk.raw", meta["kernel"], meta["initrd"]):
        assert (bundle / part).stat().st_size > 1 << 20, f"{part} of the prepared bundle"
    again = subprocess.run([installed.fg_image, "builder", "image"], cwd=home, env=env, capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == image_id
    assert "build the qemu builder image" not in again.stderr and "prepare" not in again.stderr, \
        "the second run finds the stored, prepared image"
