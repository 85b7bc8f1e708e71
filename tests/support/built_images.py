"""The register stage's real input: the generate stage's bootable Debian recipes, built once into the test cache.

The test cache is RAIN_TEST_CACHE (default ~/.cache/rain-tests); builds there take
a lock, so one build runs at a time across pytest sessions. The mirror is the
host's own (generate reads it from the apt configuration).
`PYTHONPATH=tests python -m support.built_images` builds the kernel image and prints its path.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from support.cli import FG_IMAGE, RECIPES

RECIPE = RECIPES / "debian-bookworm-kernel.yaml"
CLOUD_RECIPE = RECIPES / "debian-bookworm-cloud.yaml"


def cache_dir() -> Path:
    """The test cache (made if missing): generated images, their data dir and lock."""
    base = os.environ.get("RAIN_TEST_CACHE") or str(Path.home() / ".cache" / "rain-tests")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _generate(recipe: Path, out_name: str, *formats: str) -> Path:
    """`fg-image generate RECIPE` into the test cache, reused while the recipe and the build are unchanged
    through generate's own result cache there; one build at a time (pytest sessions may run side by side)."""
    out = cache_dir() / out_name
    env = {**os.environ, "RAIN_DATA_DIR": str(cache_dir() / "generate-data")}
    with open(cache_dir() / ".generated.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        subprocess.run([str(FG_IMAGE), "generate", str(recipe), *(a for f in formats for a in ("--format", f)),
                        "--no-upload", "-o", str(out)], check=True, stdin=subprocess.DEVNULL, env=env)
    return out


def build_debian_tarball() -> Path:
    """recipes/debian-bookworm-kernel.yaml in its own formats (qcow2, raw, tar.zst): a bootable image without
    cloud-init; returns the tar.zst (the others are beside it). Built once for the generate and register tests."""
    return _generate(RECIPE, "generated") / "debian-bookworm-kernel.tar.zst"


def build_cloud_image() -> Path:
    """recipes/debian-bookworm-cloud.yaml as qcow2 (a bootable GPT disk with cloud-init) and tar.zst, from one
    build; returns the directory holding both."""
    return _generate(CLOUD_RECIPE, "generated-cloud", "qcow2", "tar.zst")


if __name__ == "__main__":
    print(build_debian_tarball())
