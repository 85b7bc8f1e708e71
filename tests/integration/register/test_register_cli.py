"""The fg-image register commands as a user runs them, and an admin accepting a vetting rule."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
from support.images import make_tarball, make_tree
from support.repository import upload

from rain.digests import sha256_of
from rain.errors import ExitCode, Forbidden, VetFailed
from rain.register.pipeline import register
from rain.register.rules import all_rules

pytestmark = pytest.mark.integration


def cli_env(sites) -> dict[str, str]:
    keep = ("RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_OS_PASSWORD", "RAIN_TEST_AWS_KEY", "RAIN_TEST_AWS_SECRET")
    return {"RAIN_TARGETS_FILE": str(sites.path), **{k: os.environ[k] for k in keep}}


def test_register_show_registrations_deregister_through_the_cli(fg, sites, clean_tarball, tmp_path):
    env = cli_env(sites)
    manifest = tmp_path / "manifest.json"  # as generate writes it: the image then has an SBOM
    manifest.write_text(json.dumps({
        "name": "deb", "os": {"family": "debian", "release": "12", "arch": "amd64"}, "recipe_hash": "ef" * 32,
        "packages": [{"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64", "license": "GPL-3+"}],
        "artifacts": [{"format": "tar.zst", "file": clean_tarball.name, "sha256": sha256_of(clean_tarball)}]}))
    up = fg("upload", str(clean_tarball), "--name", "deb", "--os", "debian", "--release", "12",
            "--manifest", str(manifest), env=env)
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.strip()
    reg = fg("register", image_id, "--target", "openstack", "--json", env=env)
    assert reg.returncode == 0, reg.stderr
    outcome = json.loads(reg.stdout)
    assert outcome["vetting"]["verdict"] == "pass" and outcome["remote_id"] in sites["openstack"].backend.images
    steps = ["fetch", "unpack", "vet", "adapt", "vet-adapted", "pack", "publish", "record"]
    for step in steps:
        assert f"… {step}\n" in reg.stderr and f"✓ {step} (" in reg.stderr  # progress per step, plain in a pipe
    assert sorted(outcome["timings"]) == sorted(steps)  # the outcome times every step
    glance_image = sites["openstack"].backend.images[outcome["remote_id"]]
    assert (glance_image["os_distro"], glance_image["os_version"], glance_image["hw_disk_bus"]) == \
        ("debian", "12", "virtio")
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert shown["registrations"][0]["remote_id"] == outcome["remote_id"]
    derived = json.loads(fg("show", outcome["derived_image"], "--json", env=env).stdout)
    assert derived["parent"] == image_id
    # the registration and the adapted copy name the SBOM they derive from (issue #16)
    source_sbom = hashlib.sha256(fg("sbom", image_id, env=env).stdout.encode()).hexdigest()
    assert shown["registrations"][0]["detail"]["sbom"] == derived["provenance"]["sbom"] == source_sbom
    assert f"from SBOM {source_sbom[:16]}" in fg("show", image_id, env=env).stdout
    assert fg("sbom", outcome["derived_image"], env=env).returncode == 3, "an adapted copy has no SBOM of its own"
    regs = json.loads(fg("registrations", image_id, "--json", env=env).stdout)
    assert [(r["target"], r["site"]) for r in regs] == [("openstack", "default")]
    gone = fg("deregister", image_id, "--target", "openstack", "--yes", env=env)
    assert gone.returncode == 0, gone.stderr
    assert sites["openstack"].backend.images == {}
    assert "not registered anywhere" in fg("registrations", image_id, env=env).stdout


def test_vet_path_fails_with_exit_code_and_names_rules(fg, bad_tarball):
    result = fg("vet", str(bad_tarball), "--target", "hpc", "--json")
    assert result.returncode == ExitCode.VET_FAILED
    report = json.loads(result.stdout)
    assert report["verdict"] == "fail"
    assert {f["rule"] for f in report["findings"] if f["blocking"]} == {
        "archive-escape", "empty-password", "ssh-host-keys", "private-keys"}
    # progress (… unpack, ✓ unpack (0.0s), … vet, ✓ vet (0.0s)), then the verdict: one line
    errors = [line for line in result.stderr.splitlines() if line[:2] not in ("… ", "✓ ")]
    assert len(errors) == 1 and errors[0].startswith("error: vetting failed for hpc") and "private-keys" in errors[0]


def test_vet_clean_directory_passes(fg, tmp_path):
    """A clean root passes with no findings; its report says what was vetted and lists every rule that
    applies without a target (all but the optional kernel groups) as run."""
    root = make_tree(tmp_path / "root")
    result = fg("vet", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"PASS {root} — target (none), policy default, blocks at high",
                                          "no findings"]
    report = json.loads(fg("vet", str(root), "--json").stdout)
    assert (report["verdict"], report["findings"], report["accepted_rules"]) == ("pass", [], [])
    assert (report["subject"], report["target"], report["policy"]) == (str(root), None, "default")
    assert report["rules_run"] == [rule for rule, r in all_rules().items() if r.group == "always"]


def test_bad_target_settings_are_one_line_errors(fg, sites, clean_tarball):
    env = cli_env(sites)
    image_id = fg("upload", str(clean_tarball), env=env).stdout.strip()
    unknown = fg("register", image_id, "--target", "vmware", env=env)
    assert unknown.returncode == ExitCode.USAGE and "hpc, opennebula, openstack, ec2" in unknown.stderr
    no_creds = fg("register", image_id, "--target", "ec2", env={**env, "RAIN_TEST_AWS_SECRET": ""})
    assert no_creds.returncode == ExitCode.USAGE
    assert no_creds.stderr.strip().count("\n") == 0 and "RAIN_TEST_AWS_SECRET" in no_creds.stderr
    assert "Traceback" not in no_creds.stderr + unknown.stderr


def test_register_of_a_bad_image_exits_vet_failed(fg, sites, bad_tarball):
    env = cli_env(sites)
    image_id = fg("upload", str(bad_tarball), env=env).stdout.strip()
    result = fg("register", image_id, "--target", "ec2", env=env)
    assert result.returncode == ExitCode.VET_FAILED
    assert "empty-password" in result.stdout and "vetting failed for ec2" in result.stderr
    assert json.loads(fg("show", image_id, "--json", env=env).stdout)["quarantined"] == ["ec2"]


def test_only_an_admin_accepts_a_rule_and_then_registration_passes(sites, repos, tmp_path):
    root = make_tree(tmp_path / "root")
    tool = root / "usr/local/bin/mpirun-helper"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)  # setuid outside the allowlist: medium, blocks on bare metal only
    alice, admin = repos("alice"), repos("admin")
    image = upload(alice, make_tarball(root, tmp_path / "suid.tar.zst"))
    with pytest.raises(VetFailed, match="setuid-unlisted"):
        register(alice, sites.settings, image.id, "hpc")
    assert "hpc" in alice.show(image.id).quarantined
    with pytest.raises(Forbidden):
        alice.accept_rule(image.id, "hpc", "setuid-unlisted")
    admin.accept_rule(image.id, "hpc", "setuid-unlisted")
    outcome = register(alice, sites.settings, image.id, "hpc")
    shown = alice.show(image.id)
    assert "hpc" not in shown.quarantined and outcome.report.accepted_rules == ["setuid-unlisted"]
    assert any(e.action == "accept-rule" for e in admin.history(image.id))


def test_share_with_project_and_glance_down_at_deregister_through_the_cli(fg, sites, clean_tarball):
    cloud = sites["openstack"].backend.cloud  # the real Keystone and Glance
    env = cli_env(sites)
    image_id = fg("upload", str(clean_tarball), "--os", "debian", "--release", "12", env=env).stdout.strip()
    other = cloud.projects["other"]
    by_name = fg("register", image_id, "--target", "openstack", "--share-with-project", "other", env=env)
    assert by_name.returncode == ExitCode.USAGE and by_name.stderr.strip().count("\n") == 0
    assert "'other' is not a project id" in by_name.stderr
    hpc = fg("register", image_id, "--target", "hpc", "--share-with-project", other, env=env)
    assert hpc.returncode == ExitCode.USAGE and "not available for hpc" in hpc.stderr

    reg = fg("register", image_id, "--target", "openstack", "--share-with-project", other, "--json", env=env)
    assert reg.returncode == 0, reg.stderr
    remote = json.loads(reg.stdout)["remote_id"]
    assert cloud.image(remote, "carol").json()["visibility"] == "shared", "carol's project is a member"

    with socket.socket() as s:  # Glance's address in this region: nothing listens there
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    with cloud.region("Down", down):
        sites.rewrite("openstack", region="Down")
        gone = fg("deregister", image_id, "--target", "openstack", "--yes", env=env)
    assert gone.returncode == ExitCode.UNREACHABLE, gone.stderr
    errors = [line for line in gone.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"at {down}/v2/images: Connection refused" in errors[0], gone.stderr
    assert "Traceback" not in gone.stderr
    assert cloud.image(remote).status_code == 200, "still there: nothing reached Glance"
    assert json.loads(fg("registrations", image_id, "--json", env=env).stdout), "and still recorded"
    sites.rewrite("openstack", region="RegionOne")
    assert fg("deregister", image_id, "--target", "openstack", "--yes", env=env).returncode == 0
    assert cloud.image(remote).status_code == 404
