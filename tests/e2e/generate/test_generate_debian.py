"""The minimal Debian recipe with three extra packages, built for real, all four formats, uploaded.

Then the same recipe again (result cache), and with one package more (base cache).
Tests run in file order and share the session's build cache.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.cli import RECIPES, ids_from
from support.host import mounts_under
from support.images import manifest, tar_names, tar_read
from support.spdx import spdx_problems

from rain.image.sbom import digest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = RECIPES / "debian-bookworm-minimal.yaml"
EXTRA = ["hello", "less", "file"]
FORMATS = ["tar.zst", "raw", "qcow2", "squashfs"]


def _generate(gen: Any, out: Path, packages: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["generate", str(RECIPE), "--output", str(out), "--set", f"packages=[{', '.join(packages)}]"]
    for f in FORMATS:
        args += ["--format", f]
    return gen(*args, *extra)


def test_minimal_recipe_with_three_packages_is_built_in_four_formats_and_stored(
        gen: Any, tmp_path: Path, gen_data: Path) -> None:
    r = _generate(gen, tmp_path / "out", ["ca-certificates", *EXTRA])
    assert r.returncode == 0, r.stderr
    ids = ids_from(r.stdout)
    assert sorted(ids) == sorted(FORMATS), r.stdout
    # progress in a pipe: plain lines in the one style (… step / ✓ step (1.2s)), no terminal codes
    assert "\x1b" not in r.stderr
    for step in ("prepare", "base system", "packages", "customize", "pack raw", "upload"):
        assert f"… {step}\n" in r.stderr, (step, r.stderr)
        assert re.search(rf"^✓ {step} \(\d+\.\ds\)$", r.stderr, re.M), (step, r.stderr)
    out = tmp_path / "out"
    m = manifest(out)

    # the packages are really inside the root file system
    tar = out / "debian-bookworm-minimal.tar.zst"
    names = tar_names(tar)
    assert {"usr/bin/hello", "usr/bin/less", "usr/bin/file", "etc/motd"} <= names
    status = tar_read(tar, "var/lib/dpkg/status").decode()
    for p in EXTRA:
        assert f"Package: {p}\nStatus: install ok installed" in status
    assert b"Built by Rain" in tar_read(tar, "etc/motd")
    assert not any(n.startswith("var/cache/apt/archives/") and n.endswith(".deb") for n in names)
    assert "usr/sbin/policy-rc.d" not in names and "etc/dpkg/dpkg.cfg.d/rain-unsafe-io" not in names
    assert "etc/dpkg/dpkg.cfg.d/99mmdebstrap" not in names, "the base's build-time force-unsafe-io stays out"
    # the base was bootstrapped with dpkg under eatmydata; none of it stays
    assert not {"usr/bin/eatmydata", "usr/bin/dpkg.distrib"} & names
    assert not [n for n in names if "libeatmydata" in n]
    for f in ("var/lib/dpkg/diversions", "var/lib/dpkg/diversions-old", "etc/ld.so.cache"):
        assert b"eatmydata" not in tar_read(tar, f) and b"dpkg.distrib" not in tar_read(tar, f), f
    assert "etc/resolv.conf" not in names, "the build host's resolver config stays out of the image"
    assert tar_read(tar, "etc/hostname") == b"localhost\n"

    # the manifest says exactly what is inside, with versions, per-file checksums and step timings
    versions = {p["name"]: p["version"] for p in m["packages"]}
    assert all(versions.get(p) for p in EXTRA) and "dpkg" in versions
    assert {a["format"] for a in m["artifacts"]} == set(FORMATS)
    for a in m["artifacts"]:
        assert (out / a["file"]).stat().st_size == a["size"] and len(a["sha256"]) == 64
    assert {t["step"] for t in m["timings"]} >= {"base system", "packages", "pack raw"}
    assert m["mirror"].startswith(("http", "file")) and m["rain_version"] and len(m["recipe_hash"]) == 64

    # raw: an MBR with one ext4 partition at 1 MiB; qcow2 holds the same disk; squashfs the same files
    raw = out / "debian-bookworm-minimal.raw"
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and table["partitions"][0]["start"] == 2048
    with open(raw, "rb") as f:
        f.seek((1 << 20) + 0x438)
        assert f.read(2) == b"\x53\xef", "ext4 superblock magic"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out / "debian-bookworm-minimal.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == raw.stat().st_size
    listing = subprocess.run(["unsquashfs", "-l", str(out / "debian-bookworm-minimal.squashfs")],
                             capture_output=True, text=True, check=True).stdout
    assert "squashfs-root/usr/bin/hello" in listing

    # the images are in the repository, with the manifest as provenance
    shown = json.loads(gen("show", ids["qcow2"], "--json").stdout)
    assert shown["status"] == "available" and shown["format"] == "qcow2"
    assert shown["os"] == {"family": "debian", "release": "bookworm", "arch": "amd64"}
    assert shown["provenance"]["recipe_hash"] == m["recipe_hash"]
    assert {"hello", "less", "file"} <= {p["name"] for p in shown["provenance"]["packages"]}
    assert "debian" in shown["tags"]
    assert mounts_under(gen_data) == [] and list((gen_data / "work").iterdir()) == []

    # issue #16, acceptance 4: each file's SBOM beside it validates as SPDX 2.3, lists every package of the
    # manifest with its version, carries the file's sha256, and is the document the repository gives
    for a in m["artifacts"]:
        written = out / f"{a['file']}.spdx.json"
        assert spdx_problems(written) == [], a["file"]
        doc = json.loads(written.read_text())
        [image] = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image"]
        assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": a["sha256"]}]
        assert {p["name"]: p["versionInfo"] for p in doc["packages"] if p is not image} == versions
        printed = gen("sbom", ids[a["format"]])
        assert printed.returncode == 0 and printed.stdout == written.read_text(), a["format"]
    licensed = {p["name"]: p["licenseDeclared"] for p in doc["packages"] if p["licenseDeclared"] != "NOASSERTION"}
    assert licensed["less"] == "GPL-3.0-or-later OR LicenseRef-Less", "less's DEP-5 file says GPL-3+ or Less"
    assert "hello" not in licensed, "hello's copyright file is prose: no license a program can read"
    assert len(licensed) > len(versions) / 2, "most packages state a license a program can read"
    assert f"sha256 {digest(printed.stdout.encode())[:16]}" in gen("show", ids[a["format"]]).stdout


def test_the_same_recipe_again_is_served_from_the_result_cache(gen: Any, tmp_path: Path) -> None:
    # no timing threshold (a loaded machine made it flaky): the cache hit shows in what the build did
    r = _generate(gen, tmp_path / "again", ["ca-certificates", *EXTRA])
    assert r.returncode == 0, r.stderr
    assert "identical recipe built before" in r.stderr and "base system" not in r.stderr
    assert len(ids_from(r.stdout)) == 4


def test_one_package_more_starts_from_the_cached_base(gen: Any, tmp_path: Path, gen_data: Path) -> None:
    r = _generate(gen, tmp_path / "more", ["ca-certificates", *EXTRA, "tree"], "--no-upload")
    assert r.returncode == 0, r.stderr
    assert "base system from cache" in r.stderr
    m = manifest(tmp_path / "more")
    assert m["base"]["base_cached"] is True
    assert "tree" in {p["name"] for p in m["packages"]}
    assert "usr/bin/tree" in tar_names(tmp_path / "more" / "debian-bookworm-minimal.tar.zst")
    listed = gen("cache", "list", "--json")
    kinds = {e["kind"] for e in json.loads(listed.stdout)}
    assert kinds == {"packages", "bases", "results"}
    kept = gen("cache", "prune", "--kind", "results", "--older-than", "365", "--yes")
    assert kept.returncode == 0 and "removed 0 entries" in kept.stdout
    refused = gen("cache", "prune", "--kind", "everything", "--yes")
    assert refused.returncode == 2 and "is not one of: packages, bases, results, chunks" in refused.stderr
    assert mounts_under(gen_data) == []
