"""The qemu builder for tests: the real builder image, built once and prepared once per host.

The builder image's recipe shipped with Rain (qemu.builder_recipe()) is built by the real `fg-image generate`
(tar.zst, no upload) in the test cache (RAIN_TEST_CACHE, default
~/.cache/rain-tests, as for the register e2e image), so generate's own result
cache reuses it while the recipe is unchanged. Its boot bundle is prepared
there as well, under an id derived from the archive's sha256: every session,
and every test, boots the same bundle without a repository round trip (a
prepared bundle is used as is when the builders file names its id).

- `qemu_bundle` (session): (image id, builders file) for that bundle.
- `qemu_builder_env`: (settings, repo) for `get_builder("qemu", settings, repo)`,
  with the test's own data dir and database (`rain_env`).
- `qemu_settings(tmp_path, **qemu)`: settings whose builders file adds keys to the qemu section.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rain.config import Settings, load_settings
from rain.generate.builders.qemu import builder_recipe

FG = Path(sys.executable).parent / "fg-image"
RECIPE = builder_recipe()


def cache_dir() -> Path:
    base = os.environ.get("RAIN_TEST_CACHE") or str(Path.home() / ".cache" / "rain-tests")
    path = Path(base) / "qemu-builder"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_builder_archive() -> tuple[Path, str]:
    """(tar.zst, sha256) of the builder image, rebuilt only when the recipe or the build changed."""
    out = cache_dir() / "generated"
    # the same data dir and lock as the register tests' images (tests/e2e/register/debian_image.py): one
    # bookworm base system bootstrapped for all of them
    env = {**os.environ, "RAIN_DATA_DIR": str(cache_dir().parent / "generate-data")}
    with open(cache_dir().parent / ".generated.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        subprocess.run([str(FG), "generate", str(RECIPE), "--format", "tar.zst", "--no-upload", "-o", str(out)],
                       check=True, stdin=subprocess.DEVNULL, env=env)
    manifest = json.loads((out / "manifest.json").read_text())
    return out / "rain-builder-debian.tar.zst", manifest["artifacts"][0]["sha256"]


def write_builders_file(path: Path, image_id: str, **qemu: Any) -> Path:
    section = {"image": image_id, "cache_dir": str(cache_dir() / "bundles"), **qemu}
    path.write_text(yaml.safe_dump({"qemu": section}))
    return path


@pytest.fixture(scope="session")
def qemu_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from rain.generate.builders.qemu import QemuProvider

    archive, sha256 = build_builder_archive()
    image_id = sha256[:12]
    tmp = tmp_path_factory.mktemp("qemu-bundle")
    builders = write_builders_file(tmp / "builders.yaml", image_id)
    settings = load_settings(environ={"RAIN_DATA_DIR": str(tmp / "data"), "RAIN_CONFIG": str(tmp / "absent.toml"),
                                      "RAIN_BUILDERS_FILE": str(builders)})
    QemuProvider(settings, None).prepare(image_id, archive=archive)
    os.utime(cache_dir() / "bundles" / image_id)  # in use: see prune_bundles
    prune_bundles(keep=image_id)
    return image_id, builders


def prune_bundles(keep: str, age: float = 3600) -> None:
    """Bundles of earlier builder images (~1 GB each) go once no session has started with them for an hour."""
    for d in (cache_dir() / "bundles").iterdir():
        if len(d.name) == 12 and d.name != keep and time.time() - d.stat().st_mtime > age:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def qemu_settings(rain_env: dict[str, str], qemu_bundle: tuple[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """qemu_settings(**qemu) → Settings of this test whose builders file sets those qemu keys too."""
    def make(**qemu: Any) -> Settings:
        path = write_builders_file(tmp_path / "builders.yaml", qemu_bundle[0], **qemu)
        return load_settings(environ={**rain_env, "RAIN_BUILDERS_FILE": str(path)})
    return make


@pytest.fixture
def qemu_builder_env(qemu_settings: Any) -> Iterator[tuple[Settings, Any]]:
    from rain.repository.connect import open_repository

    settings = qemu_settings()
    yield settings, open_repository(settings)


def qemu_pids(marker: str) -> list[int]:
    """Live qemu processes whose command line mentions marker (a test's own directory)."""
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*{marker}"], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]
