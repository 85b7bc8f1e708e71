"""The register stage's real input: the generate stage's bootable Debian recipe, built once.

The mirror is the host's own (generate reads it from the apt configuration).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

FG = Path(sys.executable).parent / "fg-image"
RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "debian-bookworm-kernel.yaml"

def cache_dir() -> Path:
    base = os.environ.get("RAIN_TEST_CACHE") or str(Path.home() / ".cache" / "rain-tests")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_debian_tarball() -> Path:
    """recipes/debian-bookworm-kernel.yaml built by `fg-image generate` (tar.zst), reused while the
    recipe and the build are unchanged through generate's own result cache under the test cache."""
    out = cache_dir() / "generated"
    lock = cache_dir() / ".generated.lock"
    env = {**os.environ, "RAIN_DATA_DIR": str(cache_dir() / "generate-data")}
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        subprocess.run([str(FG), "generate", str(RECIPE), "--format", "tar.zst", "--no-upload", "-o", str(out)],
                       check=True, stdin=subprocess.DEVNULL, env=env)
    return out / "debian-bookworm-kernel.tar.zst"


if __name__ == "__main__":
    print(build_debian_tarball())
