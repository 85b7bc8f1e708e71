"""A 1 GiB image goes up and comes back intact while `fg-image` stays small in memory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.cli import FG_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]
MiB = 1 << 20
SIZE = 1024 * MiB
RSS_LIMIT_KIB = 200 * 1024
GNU_TIME = "/usr/bin/time"  # GNU time (apt package `time`, installed by scripts/setup.sh)


@pytest.fixture(scope="module")
def gib_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("large") / "big.raw"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // MiB):
            chunk = os.urandom(MiB)
            f.write(chunk)
            digest.update(chunk)
    yield path, digest.hexdigest()
    shutil.rmtree(path.parent)


def measured(args: list[str], env: dict[str, str], where: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run fg-image under GNU time; return the result and its peak resident set in KiB."""
    assert Path(GNU_TIME).exists(), "GNU time is missing: run scripts/setup.sh"
    report = where / "maxrss"
    result = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), str(FG_IMAGE), *args], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    return result, int(report.read_text().split()[-1])


def sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("mode", ["local", "service"])
def test_one_gib_round_trip_keeps_sha256_in_little_memory(mode, gib_file, rain_env, tmp_path, request):
    path, sha256 = gib_file
    env = dict(rain_env)
    if mode == "service":
        env.update(request.getfixturevalue("remote_env"))

    up, up_rss = measured(["upload", str(path), "--json"], env, tmp_path)
    assert up.returncode == 0, up.stderr
    assert f'"sha256": "{sha256}"' in up.stdout and f'"size": {SIZE}' in up.stdout
    image_id = next(line.split('"')[3] for line in up.stdout.splitlines() if line.strip().startswith('"id"'))

    target = tmp_path / "back.raw"
    down, down_rss = measured(["download", image_id, "-o", str(target)], env, tmp_path)
    assert down.returncode == 0, down.stderr
    assert target.stat().st_size == SIZE and sha_file(target) == sha256
    target.unlink()

    assert up_rss < RSS_LIMIT_KIB, f"upload peaked at {up_rss // 1024} MiB resident"
    assert down_rss < RSS_LIMIT_KIB, f"download peaked at {down_rss // 1024} MiB resident"
