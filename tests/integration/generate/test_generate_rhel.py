"""The RHEL path for real: dnf --installroot from a local RPM repository into a fresh root."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from support.cli import RECIPES
from support.rpmrepo import build_rpm_repo

pytestmark = pytest.mark.integration


def test_rocky_recipe_installs_a_package_from_a_local_rpm_repository(fg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = build_rpm_repo(tmp_path)
    out = tmp_path / "out"
    r = fg("generate", str(RECIPES / "rocky9.yaml"), "--no-upload", "--output", str(out),
           "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
           "--set", "packages=[rain-probe]", "--format", "tar.zst", timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert [(p["name"], p["version"], p["arch"]) for p in m["packages"]] == [("rain-probe", "1.0-1", "noarch")]
    assert m["os"] == {"family": "rocky", "release": "9", "arch": "x86_64"}
    with open(out / "rocky9-base.tar.zst", "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as tar:
        names = {m.name.removeprefix("./") for m in tar}
    assert "usr/share/rain-probe/README" in names
    assert any(n.startswith("var/lib/rpm/") for n in names), "the rpm database is where RHEL keeps it"
    assert not any(n.startswith(("root/.rpmdb", "var/cache/dnf/")) for n in names)
    assert not any(str(tmp_path).lstrip("/") in n for n in names), "no host paths leak into the image"
    # rpm reads the image's own database at the standard place
    root = tmp_path / "x"
    root.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(out / "rocky9-base.tar.zst"), "-C", str(root)], check=True)
    q = subprocess.run(["rpm", f"--root={root}", "--dbpath=/var/lib/rpm", "-q", "rain-probe"],
                       capture_output=True, text=True)
    assert q.stdout.strip() == "rain-probe-1.0-1.noarch", q.stderr


def test_a_package_missing_from_the_rpm_repository_is_named(fg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = build_rpm_repo(tmp_path)
    r = fg("generate", str(RECIPES / "rocky9.yaml"), "--no-upload",
           "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
           "--set", "packages=[rain-probe, no-such-rpm]", "--format", "tar.zst", timeout=300)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "'no-such-rpm' does not exist" in errors[0]


def test_an_unsigned_remote_repository_is_refused_before_building(fg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = fg("generate", str(RECIPES / "rocky9.yaml"), "--no-upload",
           "--set", "repositories=[{name: plain, url: 'http://127.0.0.1:9/el9'}]", timeout=120)
    assert r.returncode == 2 and "has no gpgkey" in r.stderr
