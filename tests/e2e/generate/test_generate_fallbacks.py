"""The bootstrap tools' fallbacks, run for real.

Debian: without mmdebstrap the base system comes from debootstrap; a build on a
builder VM from a host with neither has the machine bootstrap it. The build
runs in-process so that mmdebstrap can be made unavailable to the
bootstrapper alone (the one lookup `command.need` is patched; debootstrap is
the real one, against the host's configured mirror). It has its own data dir:
a debootstrap base must not land in the session's shared base cache, and the
shared mmdebstrap base must not hide the fallback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.builders import ONE_PASSWORD_ENV, BuildersFile
from support.cli import RECIPES
from support.host import mounts_under
from support.images import tar_names, tar_read

from rain.config import Settings, load_settings
from rain.errors import ToolMissing
from rain.generate.build import BuildOptions, generate
from rain.generate.loader import load_recipe
from rain.host import command
from rain.progress import Reporter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PACKAGES = ["ca-certificates", "hello", "less"]


@pytest.fixture
def no_mmdebstrap(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Rain's tool lookup finds no mmdebstrap (every other tool as usual); returns what was asked for."""
    real, asked = command.need, []

    def need(tool: str) -> str:
        asked.append(tool)
        if tool == "mmdebstrap":
            raise ToolMissing("mmdebstrap is not installed", hint="hidden by the test")
        return real(tool)

    monkeypatch.setattr(command, "need", need)
    return asked


def test_debootstrap_builds_the_base_when_mmdebstrap_is_missing(settings: Settings, no_mmdebstrap: list[str],
                                                               tmp_path: Path) -> None:
    loaded = load_recipe(RECIPES / "debian-bookworm-minimal.yaml",
                         {"packages": PACKAGES, "formats": ["tar.zst"]})
    result = generate(loaded, settings, BuildOptions(upload=False, output=tmp_path / "out"), Reporter())
    assert "mmdebstrap" in no_mmdebstrap and "debootstrap" in no_mmdebstrap, no_mmdebstrap

    # the base was made by debootstrap, and cached as such
    data = settings.data_path
    assert result.manifest["base"]["base_cached"] is False
    key = result.manifest["base"]["base_key"]
    meta = json.loads((data / "cache" / "bases" / f"{key}.json").read_text())
    assert meta["tool"] == "debootstrap" and meta["mirror"] == result.manifest["mirror"]
    base_debs = list((data / "cache" / "bases" / key / "var/cache/apt/archives").glob("*.deb"))
    assert base_debs == [], "the cached base keeps no .debs (the package cache has them)"

    # the recipe's packages are installed in the image; nothing of the build host or the build in it
    tar = tmp_path / "out" / "debian-bookworm-minimal.tar.zst"
    names = tar_names(tar)
    assert {"usr/bin/hello", "usr/bin/less", "etc/ssl/certs/ca-certificates.crt", "etc/motd"} <= names
    status = tar_read(tar, "var/lib/dpkg/status").decode()
    for p in PACKAGES:
        assert f"Package: {p}\nStatus: install ok installed" in status, p
    assert {p["name"] for p in result.manifest["packages"]} >= set(PACKAGES)
    assert "etc/resolv.conf" not in names, "the build host's resolver config stays out of the image"
    assert tar_read(tar, "etc/hostname") == b"localhost\n", "not the build host's name"
    assert not any(n.startswith("var/cache/apt/archives/") and n.endswith(".deb") for n in names)
    assert not any(n.startswith("debootstrap/") for n in names), "debootstrap's own work dir is gone"
    assert "usr/sbin/policy-rc.d" not in names

    # debootstrap's downloads went to the shared package cache
    assert any((data / "cache" / "packages" / "debian-bookworm-amd64").glob("dpkg_*.deb"))

    # nothing left behind: no mounts, no work dir, no half-made base
    assert mounts_under(data) == []
    work = data / "work"
    assert not work.exists() or list(work.iterdir()) == []
    assert [p.name for p in (data / "cache" / "bases").iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


def test_a_builder_machine_bootstraps_the_base_itself_when_this_host_has_no_bootstrap_tool(
        rain_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, opennebula_builders_file: BuildersFile,
        opennebula_sim: Any, tmp_path: Path) -> None:
    """A build on a builder VM normally gets the base system this host cached; a host with neither
    mmdebstrap nor debootstrap (a client on another distribution) has the machine run mmdebstrap."""
    real, asked = command.need, []

    def need(tool: str) -> str:
        asked.append(tool)
        if tool in ("mmdebstrap", "debootstrap"):
            raise ToolMissing(f"{tool} is not installed", hint="hidden by the test")
        return real(tool)

    monkeypatch.setattr(command, "need", need)
    settings = load_settings(environ={**rain_env, "RAIN_BUILDERS_FILE": str(opennebula_builders_file.path),
                                      ONE_PASSWORD_ENV: "one-secret"})
    loaded = load_recipe(RECIPES / "debian-bookworm-minimal.yaml", {"formats": ["tar.zst"]})
    result = generate(loaded, settings, BuildOptions(upload=False, builder="opennebula", output=tmp_path / "out"),
                      Reporter())
    assert {"mmdebstrap", "debootstrap"} <= set(asked), asked
    assert result.manifest["base"] == {"base_cached": False}, "no base was made or used on this host"
    assert not list((settings.data_path / "cache" / "bases").glob("debian-*"))
    tar = tmp_path / "out" / "debian-bookworm-minimal.tar.zst"
    names = tar_names(tar)
    assert {"etc/motd", "usr/sbin/update-ca-certificates", "var/lib/dpkg/status"} <= names
    assert "etc/resolv.conf" not in names and tar_read(tar, "etc/hostname") == b"localhost\n"
