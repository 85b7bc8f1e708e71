"""The cloud recipe registered on the cloud targets with `--boot-test` (issue #10, acceptance 2 and 6).

Each boot test boots the exact disk that is then published, under QEMU (TCG), the way that cloud boots it:
OpenNebula's CONTEXT CD; EC2's metadata service at 169.254.169.254 (IMDSv2), the disk on NVMe and UEFI
firmware (this site says `firmware: uefi`); an OpenStack config drive for `--output`. It passes only on an
SSH login with the key handed over that way, as the target's login user, with the root grown to the disk.

Sites as in the integration suite: moto's real EC2/EBS server, the real Keystone and Glance, the OpenNebula
SIMULATOR.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from test_register_debian_e2e import env_for, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TIMEOUT = 2400  # two boots under TCG on a loaded 2-core machine, with packing and publishing


def upload_cloud(fg, cloud_image: Path, env: dict[str, str]) -> str:
    return upload(fg, cloud_image / "debian-bookworm-cloud.qcow2", env, "debian-bookworm-cloud")


def test_the_cloud_image_boots_as_opennebula_and_ec2_boot_it_and_is_published(fg, sites, cloud_image, tmp_path):
    sites.rewrite("ec2", firmware="uefi")
    env = env_for(sites)
    image_id = upload_cloud(fg, cloud_image, env)
    outcomes = {}
    for target in ("opennebula", "ec2"):
        result = fg("register", image_id, "--target", target, "--boot-test", "--json", env=env, timeout=TIMEOUT)
        assert result.returncode == 0, f"{target}: {result.stderr}"
        outcomes[target] = json.loads(result.stdout)
        assert "boot-test" in outcomes[target]["timings"], target
        assert sites[target].holds(outcomes[target]["remote_id"]), target
        log = (tmp_path / "rain-data" / "boot-logs" / f"{image_id}-{target}.log").read_text(errors="replace")
        assert "GNU GRUB" in log and "Cloud-init v." in log, f"{target}: the image's loader, then cloud-init"
        # the image already has cloud-init and the cloud's drivers in its initramfs (read, not run): adapt
        # configures it, installs nothing and rebuilds nothing, so none of the image's programs ran
        changes = outcomes[target]["changes"]
        assert not [c for c in changes if c.startswith(("installed ", "rebuilt "))], (target, changes)
        assert any(c.startswith("the initramfs for 6.") and c.endswith("(not rebuilt)") for c in changes), changes
    ec2_log = (tmp_path / "rain-data" / "boot-logs" / f"{image_id}-ec2.log").read_text(errors="replace")
    assert "BdsDxe: loading" in ec2_log, "OVMF (UEFI) loaded the disk's loader: the site says firmware: uefi"

    # opennebula: the context's USERNAME got a login with the context's key (the boot test logged in as it)
    one_log = (tmp_path / "rain-data" / "boot-logs" / f"{image_id}-opennebula.log").read_text(errors="replace")
    assert "rain-one-username: rainuser can log in with the context's SSH keys" in one_log
    assert "added rain-one-username.service: OpenNebula's USERNAME logs in with the context's SSH keys" \
        in outcomes["opennebula"]["changes"]

    # what OpenNebula and EC2 were told about booting it
    template = sites["opennebula"].backend.images[int(outcomes["opennebula"]["remote_id"])].template
    assert (template["DEV_PREFIX"], template["DRIVER"], template["RAIN_FIRMWARE"]) == ("vd", "qcow2", "BIOS")
    ec2 = sites["ec2"].backend
    ami = ec2.describe_images(ImageIds=[outcomes["ec2"]["remote_id"]])["Images"][0]
    assert ami.get("BootMode") == "uefi", "the AMI boots as the site's firmware says"

    # ec2: the snapshot holds exactly the raw disk's non-zero 512 KiB blocks, each with its SHA-256
    derived_raw = tmp_path / "ec2.raw"
    assert fg("download", outcomes["ec2"]["derived_image"], "-o", str(derived_raw), env=env,
              timeout=600).returncode == 0
    table = subprocess.run(["sfdisk", "--json", str(derived_raw)], capture_output=True, text=True, check=True)
    assert json.loads(table.stdout)["partitiontable"]["label"] == "gpt", "the published disk is the bootable one"
    snapshot = next(t["Value"] for t in ami["Tags"] if t["Key"] == "rain:snapshot")
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

    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert sorted(r["target"] for r in shown["registrations"]) == ["ec2", "opennebula"]
    assert {d["id"] for d in shown["derived"]} == {o["derived_image"] for o in outcomes.values()}
    # each registration, and each adapted copy, names the SBOM of the image it derives from (issue #16)
    source_sbom = hashlib.sha256(fg("sbom", image_id, env=env).stdout.encode()).hexdigest()
    assert [r["detail"]["sbom"] for r in shown["registrations"]] == [source_sbom, source_sbom]
    for outcome in outcomes.values():
        derived = json.loads(fg("show", outcome["derived_image"], "--json", env=env).stdout)
        assert derived["provenance"]["sbom"] == source_sbom


def test_output_writes_the_disk_that_passed_the_openstack_boot_test(fg, cloud_image, tmp_path):
    """`--output` for a site Rain cannot reach: the qcow2 at PATH is the disk that reached the SSH login."""
    env = {"RAIN_TARGETS_FILE": str(tmp_path / "no-targets.yaml")}
    image_id = upload_cloud(fg, cloud_image, env)
    path = tmp_path / "for-the-operator.qcow2"
    result = fg("register", image_id, "--target", "openstack", "--boot-test", "--output", str(path), "--json",
                env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert "boot-test" in outcome["timings"] and outcome["files"] == [path.name]
    log = (tmp_path / "rain-data" / "boot-logs" / f"{image_id}-openstack.log").read_text(errors="replace")
    assert "Cloud-init v." in log and "config-2" not in str(path)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and not info.get("backing-filename"), "the disk itself, not the boot overlay"
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert shown["registrations"] == [] and shown["derived"] == [], "the catalog is unchanged"
    events = json.loads(fg("history", image_id, "--json", env=env).stdout)
    assert [e["action"] for e in events if e["action"] in ("export", "register")] == ["export"]
    [export] = [e for e in events if e["action"] == "export"]
    printed = fg("sbom", image_id, env=env).stdout.encode()
    assert export["detail"]["detail"]["sbom"] == hashlib.sha256(printed).hexdigest(), "the SBOM it derives from"
