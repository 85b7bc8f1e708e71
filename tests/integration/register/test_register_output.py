"""`fg-image register --output PATH`, and the refusals a user meets before any work is spent.

--output writes the adapted, vetted, packed image to a local path for a site Rain cannot reach: these
tests run it with NO targets file at all, so nothing can have been published, and check the catalog
gains only a history entry. The images are the small fake trees of support/images.py (no mmdebstrap build).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.images import make_tarball, make_tree

from rain.errors import ExitCode
from rain.register.pipeline import boot_testable_targets
from rain.register.targets.base import TargetName

pytestmark = pytest.mark.integration


def no_site_env(tmp_path: Path) -> dict[str, str]:
    """No targets file and no credentials: --output must not need them."""
    return {"RAIN_TARGETS_FILE": str(tmp_path / "no-targets.yaml")}


def export_events(fg, image_id: str, env: dict[str, str]) -> list[dict]:
    events = json.loads(fg("history", image_id, "--json", env=env).stdout)
    return [e for e in events if e["action"] in ("export", "register")]


def test_output_writes_a_qcow2_for_openstack_and_only_a_history_entry(fg, clean_tarball, tmp_path):
    env = no_site_env(tmp_path)
    image_id = fg("upload", str(clean_tarball), "--name", "deb", "--os", "debian", env=env).stdout.strip()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = out_dir / "deb.qcow2"
    before = json.loads(fg("show", image_id, "--json", env=env).stdout)
    result = fg("register", image_id, "--target", "openstack", "--output", str(path), "--json", env=env,
                timeout=600)
    assert result.returncode == 0, result.stderr
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] > 0
    assert os.listdir(out_dir) == ["deb.qcow2"]  # no temporary name left beside it
    outcome = json.loads(result.stdout)
    assert outcome["output"] == str(path) and outcome["format"] == "qcow2"
    assert "✓ write (" in result.stderr and "… publish" not in result.stderr

    # the catalog: no derived image, no registration; the history says it was exported for openstack
    images = json.loads(fg("list", "--json", env=env).stdout)
    assert [i["id"] for i in images] == [image_id]
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    read = ("access_count", "last_access")  # the fetch is a download like any other
    assert {k: v for k, v in shown.items() if k not in read} == {k: v for k, v in before.items() if k not in read}
    assert shown["vetting"] == {} and shown["registrations"] == [] and shown["derived"] == []
    events = export_events(fg, image_id, env)
    assert [(e["action"], e["detail"]["target"]) for e in events] == [("export", "openstack")]
    assert events[0]["detail"]["detail"]["files"] == ["deb.qcow2"]


def test_output_for_hpc_is_a_directory_of_boot_files(fg, clean_tarball, tmp_path):
    env = no_site_env(tmp_path)
    image_id = fg("upload", str(clean_tarball), "--name", "deb", env=env).stdout.strip()
    path = tmp_path / "deb-hpc"
    result = fg("register", image_id, "--target", "hpc", "--output", str(path), env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(path)) == ["initrd.img", "rootfs.squashfs", "vmlinuz"]
    assert (path / "rootfs.squashfs").read_bytes()[:4] == b"hsqs"
    assert (path / "initrd.img").read_bytes()[:2] == b"\x1f\x8b"  # Rain's gzip'd cpio
    assert f"wrote {image_id} for hpc to {path}" in result.stdout.replace("\n", "")
    assert [e["action"] for e in export_events(fg, image_id, env)] == ["export"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".deb-hpc")] == []


def test_output_refuses_an_existing_path_unless_forced(fg, clean_tarball, tmp_path):
    env = no_site_env(tmp_path)
    image_id = fg("upload", str(clean_tarball), "--name", "deb", env=env).stdout.strip()
    path = tmp_path / "deb.raw"
    path.write_text("the operator's earlier copy\n")
    refused = fg("register", image_id, "--target", "ec2", "--output", str(path), env=env)
    assert refused.returncode == ExitCode.USAGE
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert "… fetch" not in refused.stderr  # refused before any work
    assert path.read_text() == "the operator's earlier copy\n"
    assert export_events(fg, image_id, env) == []

    no_dir = fg("register", image_id, "--target", "ec2", "--output", str(tmp_path / "nowhere" / "x.raw"), env=env)
    assert no_dir.returncode == ExitCode.USAGE and "no directory" in no_dir.stderr
    stray = fg("register", image_id, "--target", "ec2", "--force", env=env)
    assert stray.returncode == ExitCode.USAGE and "--force applies to --output" in stray.stderr

    # --force replaces what is there, even a file by hpc's directory
    forced = fg("register", image_id, "--target", "hpc", "--output", str(path), "--force", env=env, timeout=600)
    assert forced.returncode == 0, forced.stderr
    assert sorted(os.listdir(path)) == ["initrd.img", "rootfs.squashfs", "vmlinuz"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".deb.raw")] == []  # nor the old copy
    assert [e["action"] for e in export_events(fg, image_id, env)] == ["export"]


def test_an_image_without_a_kernel_is_refused_before_adapting(fg, sites, tmp_path):
    from test_register_cli import cli_env

    env = cli_env(sites)
    tarball = make_tarball(make_tree(tmp_path / "root", kernel=False), tmp_path / "nokernel.tar.zst")
    image_id = fg("upload", str(tarball), "--name", "nokernel", env=env).stdout.strip()
    result = fg("register", image_id, "--target", "openstack", env=env)
    assert result.returncode == ExitCode.USAGE
    # progress lines (… fetch, ✓ fetch (0.1s), … unpack, ...), then the error: one line
    error = [line for line in result.stderr.splitlines() if line[:2] not in ("… ", "✓ ", "✗ ")]
    assert len(error) == 1 and f"image {image_id} has no kernel" in error[0], result.stderr
    assert "/boot/vmlinuz-*" in error[0] and "linux-image-amd64" in error[0]
    assert "… adapt" not in result.stderr and "… pack" not in result.stderr
    assert sites["openstack"].published() == 0  # no Glance image
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert shown["registrations"] == [] and shown["derived"] == [] and shown["quarantined"] == []


def test_every_target_has_a_boot_test() -> None:
    """--boot-test works on every target (issue #10): the refusal with its computed list is for targets to come."""
    assert set(boot_testable_targets()) == {t.value for t in TargetName}


def test_output_with_a_site_uses_its_settings_but_never_its_secrets(sites, monkeypatch):
    from rain.errors import ConfigError
    from rain.register.targets.sites import open_offline, open_target

    sites.rewrite("hpc", accel="kvm", console="ttyS1,9600")
    for var in ("RAIN_TEST_OS_PASSWORD", "RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_AWS_SECRET"):
        monkeypatch.delenv(var)
    for target in ("openstack", "opennebula", "ec2"):
        with pytest.raises(ConfigError, match="RAIN_TEST_"):
            open_target(sites.settings, target)  # publishing needs them, and says which is missing
        provider, site = open_offline(sites.settings, target, "default")
        assert site == "default" and provider.site == provider.site_model.model_validate(
            sites.config[target]["default"])
    hpc, _ = open_offline(sites.settings, "hpc", "default")
    assert (hpc.site.accel, hpc.site.console) == ("kvm", "ttyS1,9600")  # the boot test runs as that site says
    bare, site = open_offline(sites.settings.with_overrides(targets_file="/nonexistent/targets.yaml"), "hpc")
    assert site == "" and (bare.site.accel, bare.site.console) == ("tcg", "ttyS0,115200")
