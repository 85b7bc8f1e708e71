"""Cloning a repository image, batches, and the other Debian recipes in recipes/ built for real."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.built_images import build_debian_tarball
from support.cli import RECIPES
from support.host import mounts_under
from support.images import manifest, tar_names, tar_read

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def getcap_in(archive: Path, name: str, scratch: Path) -> str:
    """GNU tar (not Rain) takes one file out with its attributes; the real getcap reads them."""
    scratch.mkdir()
    subprocess.run(["tar", "--zstd", "--xattrs", "--xattrs-include=*", "-xf", str(archive), "-C", str(scratch),
                    f"./{name}"], check=True)
    out = subprocess.run(["getcap", str(scratch / name)], capture_output=True, text=True, check=True).stdout
    return out.strip().removeprefix(str(scratch / name)).strip()


def test_clone_extends_a_stored_image_with_more_packages(gen: Any, tmp_path: Path, gen_data: Path) -> None:
    base = gen("generate", str(RECIPES / "debian-bookworm-minimal.yaml"), "--format", "tar.zst",
               "--set", "packages=[ca-certificates, iputils-ping]", "--output", str(tmp_path / "base"))
    assert base.returncode == 0, base.stderr
    base_id = base.stdout.strip()
    ping = "usr/bin/ping"  # iputils-ping's postinst gives it cap_net_raw instead of setuid root
    assert getcap_in(tmp_path / "base" / "debian-bookworm-minimal.tar.zst", ping, tmp_path / "b") == "cap_net_raw=ep"
    recipe = tmp_path / "child.yaml"
    recipe.write_text(f"name: child\nos: {{family: debian, release: bookworm}}\nbase: {base_id}\n"
                      "packages: [tree]\nfiles:\n  - {path: /etc/child, content: child}\n"
                      "upload: {share_with: [carol], tags: [child]}\n")
    assert gen("users", "add", "carol").returncode == 0
    r = gen("generate", str(recipe), "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    child_id = r.stdout.strip()
    names = tar_names(tmp_path / "out" / "child.tar.zst")
    assert {"usr/bin/tree", "etc/child"} <= names
    assert b"Built by Rain" in tar_read(tmp_path / "out" / "child.tar.zst", "etc/motd"), "the base's files stay"
    assert getcap_in(tmp_path / "out" / "child.tar.zst", ping, tmp_path / "c") == "cap_net_raw=ep", \
        "the clone keeps the base's file capabilities"
    shown = json.loads(gen("show", child_id, "--json", env={"RAIN_USER": "carol"}).stdout)
    assert shown["shared_with"] == ["carol"] and shown["tags"] == ["child"]
    assert shown["parent"] == base_id
    assert shown["provenance"]["base"]["clone_of"] == base_id
    assert mounts_under(gen_data) == []


def test_batch_builds_a_matrix_in_parallel_and_ends_with_a_table(gen: Any, tmp_path: Path) -> None:
    """On an empty data dir: the recipes share bookworm minbase, which is bootstrapped once for the batch."""
    fresh = {"RAIN_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "b.yaml").write_text(
        f"matrix:\n  - recipe: {RECIPES / 'debian-minimal-matrix.yaml'}\n"
        "    axes: {vars.flavour: [one, two]}\n"
        f"recipes:\n  - path: {RECIPES / 'debian-bookworm-minimal.yaml'}\n    set: {{packages: [no-such-pkg-rain]}}\n")
    dry = gen("batch", str(tmp_path / "b.yaml"), "--dry-run", "--no-upload", env={"COLUMNS": "300", **fresh})
    assert dry.returncode == 0 and dry.stdout.count("would build") == 3, dry.stdout + dry.stderr
    assert "debian-minimal-matrix.yaml[flavour=one]" in dry.stdout, "entry labels are text, not markup"
    r = gen("batch", str(tmp_path / "b.yaml"), "--jobs", "2", "--keep-going", "--no-upload", "--json", env=fresh)
    assert r.returncode == 10, r.stderr
    outcomes = {o["name"]: o for o in json.loads(r.stdout)}
    assert outcomes["debian-bookworm-one"]["status"] == "built"
    assert outcomes["debian-bookworm-two"]["status"] == "built"
    # the three builds share bookworm minbase: one bootstraps it (whichever came first), two reuse it
    keys = {outcomes[n]["base"].split()[-1] for n in ("debian-bookworm-one", "debian-bookworm-two")}
    assert len(keys) == 1 and keys.pop().startswith("debian-bookworm-amd64-minbase-"), outcomes
    assert r.stderr.count("base system from cache") == 2, r.stderr
    assert len(list((tmp_path / "data" / "cache" / "bases").glob("debian-*.json"))) == 1
    assert outcomes["debian-bookworm-minimal"]["status"] == "failed"
    assert "no-such-pkg-rain" in outcomes["debian-bookworm-minimal"]["error"]
    # progress in the pipe: each build's steps in the one style, prefixed with its name; never on stdout
    marked = [ln for ln in r.stderr.splitlines() if ln[:2] in ("… ", "✓ ", "✗ ")]
    for name in ("debian-bookworm-one", "debian-bookworm-two"):
        assert any(re.fullmatch(rf"✓ {name}: \S.* \(\d+\.\ds\)", ln) for ln in marked), (name, r.stderr)
    assert any(ln.startswith("✗ debian-bookworm-minimal: ") for ln in marked), r.stderr
    assert "\x1b" not in r.stderr
    table = gen("batch", str(tmp_path / "b.yaml"), "--jobs", "2", "--keep-going", "--no-upload",
                env={"COLUMNS": "300", **fresh})
    assert "cached" in table.stdout and "failed" in table.stdout and "debian-bookworm-two" in table.stdout
    assert "BASE" in table.stdout and "shared debian-bookworm-amd64-minbase-" in table.stdout


def test_bootable_kernel_recipe() -> None:
    """The kernel recipe as `fg-image generate` makes it (built once per session for this and the register
    tests: tests/support/built_images.py)."""
    out = build_debian_tarball().parent
    names = tar_names(out / "debian-bookworm-kernel.tar.zst")
    assert any(n.startswith("boot/vmlinuz-") for n in names) and any(n.startswith("boot/initrd.img-") for n in names)
    assert "etc/systemd/system/multi-user.target.wants/ssh.service" in names
    # generalized: no SSH host keys baked in (every instance would share them); made at first boot instead
    assert not [n for n in names if n.startswith("etc/ssh/ssh_host_")], names
    assert "etc/systemd/system/multi-user.target.wants/rain-ssh-hostkeys.service" in names
    artifacts = {a["format"]: a for a in manifest(out)["artifacts"]}
    assert artifacts["qcow2"]["bootable"] is artifacts["raw"]["bootable"] is True, "a kernel makes the disks bootable"
    assert "bootable" not in artifacts["tar.zst"]
    table = subprocess.run(["sfdisk", "--json", str(out / "debian-bookworm-kernel.raw")], capture_output=True,
                           text=True, check=True).stdout
    assert '"label": "gpt"' in table and "21686148-6449-6E6F-744E-656564454649" in table, "GPT with BIOS boot"


def test_hpc_recipe(gen: Any, tmp_path: Path) -> None:
    r = gen("generate", str(RECIPES / "hpc-compute.yaml"), "--no-upload", "--format", "tar.zst",
            "--output", str(tmp_path))
    assert r.returncode == 0, r.stderr
    tar = tmp_path / "hpc-compute-bookworm.tar.zst"
    names = tar_names(tar)
    assert {"usr/bin/mpirun", "usr/sbin/munged", "etc/profile.d/hpc.sh", "home/hpc", "etc/sudoers.d/rain-hpc"} <= names
    assert "etc/systemd/system/multi-user.target.wants/munge.service" in names
    assert b"hpc:" in tar_read(tar, "etc/passwd")
    pkgs = {p["name"] for p in manifest(tmp_path)["packages"]}
    assert {"openmpi-bin", "munge", "linux-image-amd64", "sudo"} <= pkgs


def test_trixie_recipe(gen: Any, tmp_path: Path) -> None:
    r = gen("generate", str(RECIPES / "debian-trixie.yaml"), "--no-upload", "--output", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert b"trixie" in tar_read(tmp_path / "debian-trixie-minimal.tar.zst", "usr/lib/os-release")
    assert (tmp_path / "debian-trixie-minimal.squashfs").stat().st_size > 0
