"""The real thing: the image `fg-image generate recipes/debian-bookworm-kernel.yaml` builds, registered on
all four targets by `fg-image`, the hpc result booted under QEMU (TCG) to the marker the adapter's unit
prints at multi-user.target.

Sites as in the integration suite: moto's real EC2/EBS server, the OpenNebula and Keystone/Glance
SIMULATORS, hpc provisioning directories.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import pytest

from rain.register.targets.hpc import MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HPC_FILES = {"vmlinuz", "initrd.img", "rootfs.squashfs", "boot.ipxe", "pxelinux.entry", "xcat-osimage.stanza",
             "warewulf-image.yaml"}


def env_for(sites) -> dict[str, str]:
    keep = ("RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_OS_PASSWORD", "RAIN_TEST_AWS_KEY", "RAIN_TEST_AWS_SECRET")
    return {"RAIN_TARGETS_FILE": str(sites.path), **{k: os.environ[k] for k in keep}}


def test_debian_image_registers_everywhere_and_boots_on_bare_metal(fg, sites, debian_tarball, tmp_path):
    env = env_for(sites)
    up = fg("upload", str(debian_tarball), "--name", "debian-bookworm-kernel", "--os", "debian",
            "--release", "12", "--arch", "x86_64", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.strip()

    outcomes = {}
    for target in ("hpc", "opennebula", "openstack", "ec2"):
        args = ["register", image_id, "--target", target, "--json"] + (["--boot-test"] if target == "hpc" else [])
        result = fg(*args, env=env, timeout=900)
        assert result.returncode == 0, f"{target}: {result.stderr}"
        outcomes[target] = json.loads(result.stdout)
        print(target, outcomes[target]["timings"])
        assert sites[target].holds(outcomes[target]["remote_id"]), target

    # hpc: the boot test reached the marker printed by the image's own systemd; every boot file is published
    log = tmp_path / "rain-data" / "boot-logs" / f"{image_id}-hpc.log"
    assert MARKER in log.read_text(errors="replace")
    published = sites.config["hpc"]["default"]["provision_dir"] + "/" + outcomes["hpc"]["remote_id"]
    assert HPC_FILES <= set(os.listdir(published))
    assert "boot-test" in outcomes["hpc"]["timings"]

    # ec2: the snapshot holds exactly the raw image's non-zero 512 KiB blocks, each with its SHA-256
    derived_raw = tmp_path / "ec2.raw"
    assert fg("download", outcomes["ec2"]["derived_image"], "-o", str(derived_raw), env=env).returncode == 0
    ec2 = sites["ec2"].backend
    image = ec2.describe_images(ImageIds=[outcomes["ec2"]["remote_id"]])["Images"][0]
    snapshot = next(t["Value"] for t in image["Tags"] if t["Key"] == "rain:snapshot")
    import boto3

    ebs = boto3.client("ebs", region_name="us-east-1", endpoint_url=sites.config["ec2"]["default"]["endpoint_url"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    blocks = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    total = -(-derived_raw.stat().st_size // (512 * 1024))
    assert 0 < len(blocks) < total  # zero blocks were skipped
    with open(derived_raw, "rb") as f:
        for block in blocks[:: max(1, len(blocks) // 8)]:
            f.seek(block["BlockIndex"] * 512 * 1024)
            data = f.read(512 * 1024)
            got = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=block["BlockIndex"],
                                         BlockToken=block["BlockToken"])
            assert got["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
            assert got["BlockData"].read() == data

    # the repository shows every registration, and each derived image with its parent
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert sorted(r["target"] for r in shown["registrations"]) == ["ec2", "hpc", "opennebula", "openstack"]
    assert all(v["verdict"] == "pass" for v in shown["vetting"].values())
    for target, outcome in outcomes.items():
        derived = json.loads(fg("show", outcome["derived_image"], "--json", env=env).stdout)
        assert derived["parent"] == image_id, target
        assert derived["format"] == {"hpc": "squashfs", "ec2": "raw"}.get(target, "qcow2")
    assert {d["id"] for d in shown["derived"]} == {o["derived_image"] for o in outcomes.values()}
    text = fg("show", image_id, env=env).stdout
    assert all(re.search(rf"^derived\s+{o['derived_image']} ", text, re.M) for o in outcomes.values()), text


def test_vet_the_debian_image_under_each_policy(fg, debian_tarball):
    for target in ("hpc", "ec2"):
        result = fg("vet", str(debian_tarball), "--target", target, "--json", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        # a generated image passes even bare metal's strict policy as built (no baked host keys, ...)
        assert not [f["rule"] for f in report["findings"] if f["blocking"]], result.stdout
        assert "kernel-missing" in report["rules_run"]
        assert ("kernel-nvme-ena" in report["rules_run"]) == (target == "ec2")
