"""The RHEL path for real: dnf --installroot from a local RPM repository into a fresh root."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tarfile
from contextlib import closing
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


@pytest.mark.parametrize("variant, package", [("minbase", "rain-probe"), ("important", "rain-extra")])
def test_the_rocky_recipe_built_twice_cold_is_the_same_bytes_and_names_no_host_path(  # type: ignore[no-untyped-def]
        fg, tmp_path: Path, variant: str, package: str) -> None:
    """Issue #16 on the dnf path: two cold builds (their own data and work directories) give one sha256, from
    an empty root (minbase) and over a cached @core base (important). rpm records the epoch, the newest build
    time among the packages dnf resolved into the empty root (the base's, for important: a recipe package
    built later does not move it), as every package's install time; dnf's history
    keeps no time past it and no path of this host; its logs are empty; neither database ships a write-ahead
    log (whose header is random)."""
    built = 1_700_000_000  # rain-probe's BUILDTIME; rain-extra's a minute later
    repo = build_rpm_repo(tmp_path, ("rain-probe", "rain-extra"), core=("rain-probe",), built=built)
    shas, roots = [], []
    for turn in ("one", "two"):
        out = tmp_path / turn
        made = fg("generate", str(RECIPES / "rocky9.yaml"), "--no-upload", "--output", str(out),
                  "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
                  "--set", f"variant={variant}", "--set", f"packages=[{package}]", "--format", "tar.zst",
                  env={"RAIN_DATA_DIR": str(tmp_path / f"data-{turn}")}, timeout=300)
        assert made.returncode == 0, made.stderr
        shas.append(json.loads((out / "manifest.json").read_text())["artifacts"][0]["sha256"])
        root = tmp_path / f"root-{turn}"
        root.mkdir()
        subprocess.run(["tar", "-I", "zstd", "-xf", str(out / "rocky9-base.tar.zst"), "-C", str(root)], check=True)
        roots.append(root)
    assert shas[0] == shas[1], "the same recipe and repository, the same bytes"
    root = roots[0]
    epoch = json.loads((tmp_path / "one" / "manifest.json").read_text())["source_date_epoch"]
    q = subprocess.run(["rpm", f"--root={root}", "--dbpath=/var/lib/rpm", "-qa", "--qf",
                        "%{INSTALLTIME} %{BUILDTIME}\n"], capture_output=True, text=True, check=True)
    times = [line.split() for line in q.stdout.splitlines()]
    assert {installed for installed, _ in times} == {str(epoch)}, "every package installed at the epoch"
    assert sorted(int(b) for _, b in times) == ([built, built + 60] if variant == "important" else [built])
    assert epoch == built, "the base's newest build time: rain-probe's (a later recipe package does not move it)"
    leftovers = [p.name for p in root.rglob("*") if p.name.endswith(("-wal", "-shm"))]
    assert leftovers == [] and not (root / "root/.rpmdb").exists(), leftovers
    assert [p.stat().st_size for p in (root / "var/log").glob("*.log")] == [0, 0, 0, 0], "dnf's four logs, empty"
    with closing(sqlite3.connect(f"file:{root}/var/lib/dnf/history.sqlite?immutable=1", uri=True)) as db:
        transactions = db.execute("SELECT dt_begin, dt_end, cmdline FROM trans ORDER BY id").fetchall()
    assert len(transactions) == (1 if variant == "minbase" else 2), "the base's, then the recipe's"
    assert all(begin <= epoch and end <= epoch for begin, end, _ in transactions), transactions
    assert transactions[-1][2].endswith(f"install -- {package}"), transactions
    assert not [cmdline for _, _, cmdline in transactions if "/" in cmdline], transactions
    needle = str(tmp_path).encode()
    assert not [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()], \
        "no file in the image names this host's build directories"


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


def test_a_lock_pins_the_rpm_versions_it_lists_and_names_one_the_repository_lacks(fg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue #16, acceptance 2 on the dnf path: the lock names each package's NEVRA and repository; its NEVRAs are
    what dnf installs, though the repository
    now offers a newer version; a locked version it lacks is one line and nothing is kept. The license is the
    RPM's own License tag, and the SBOM says it."""
    import yaml

    from rain.image import sbom

    repo = build_rpm_repo(tmp_path)
    recipe = tmp_path / "rocky9.yaml"
    recipe.write_text((RECIPES / "rocky9.yaml").read_text())
    sets = ["--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
            "--set", "packages=[rain-probe]", "--format", "tar.zst"]
    made = fg("generate", str(recipe), "--no-upload", "--lock", "--output", str(tmp_path / "first"), *sets,
              timeout=300)
    assert made.returncode == 0, made.stderr
    lock = yaml.safe_load((tmp_path / "rocky9.lock").read_text())
    # the NEVRA and the repository it came from (the recipe's name for it; dnf's history database says which)
    assert [(p["name"], p["version"], p["arch"], p["archive"]) for p in lock["packages"]] \
        == [("rain-probe", "1.0-1", "noarch", "local")]
    m = json.loads((tmp_path / "first" / "manifest.json").read_text())
    assert isinstance(m["source_date_epoch"], int), "the newest package's build time, the tar's times clamped to it"
    assert m["packages"][0]["license"] == "Apache-2.0"
    doc = json.loads(sbom.render(m, m["artifacts"][0]["sha256"], "tar.zst"))
    assert doc["packages"][1]["licenseDeclared"] == "Apache-2.0"

    build_rpm_repo(tmp_path, versions=("2.0",))  # the repository moves on: 2.0 beside 1.0
    locked = fg("generate", str(recipe), "--no-upload", "--output", str(tmp_path / "locked"), *sets, timeout=300)
    assert locked.returncode == 0, locked.stderr
    again = json.loads((tmp_path / "locked" / "manifest.json").read_text())
    assert [(p["name"], p["version"]) for p in again["packages"]] == [("rain-probe", "1.0-1")], "the lock's, not 2.0"
    (tmp_path / "rocky9.lock").rename(tmp_path / "kept.lock")  # without it (and the cached 1.0 result): 2.0
    newest = fg("generate", str(recipe), "--no-upload", "--no-cache", "--output", str(tmp_path / "newest"), *sets,
                timeout=300)
    assert newest.returncode == 0, newest.stderr
    newest_m = json.loads((tmp_path / "newest" / "manifest.json").read_text())
    assert [(p["name"], p["version"]) for p in newest_m["packages"]] == [("rain-probe", "2.0-1")], "unlocked: newest"

    lock["packages"][0]["version"] = "3.0-1"  # a version the repository never had
    (tmp_path / "rocky9.lock").write_text(yaml.safe_dump(lock))
    gone = fg("generate", str(recipe), "--no-upload", *sets, timeout=300)
    assert gone.returncode == 10, gone.stderr
    [line] = [ln for ln in gone.stderr.splitlines() if ln.startswith("error:")]
    assert "rocky9.lock pins rain-probe 3.0-1, which the mirror no longer offers" in line, line
