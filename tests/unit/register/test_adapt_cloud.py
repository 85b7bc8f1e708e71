"""What each cloud's contextualization writes, and when adapt decides to install packages
(the installing itself runs for real in tests/e2e/register/test_register_contextualize.py)."""

from __future__ import annotations

import yaml
from support.images import make_tree

from rain.register import adapt
from rain.register.targets.ec2 import Ec2Target
from rain.register.targets.opennebula import OpenNebulaTarget
from rain.register.targets.openstack import OpenStackTarget


def test_an_image_without_contextualization_needs_cloud_init_growpart_and_dhcp(tmp_path):
    bare = make_tree(tmp_path / "bare", cloud=False)
    assert adapt.missing_packages(bare) == ["cloud-init", "cloud-guest-utils", "ifupdown", "isc-dhcp-client"]
    assert adapt.missing_packages(bare, "admin")[-1] == "sudo"  # the login user becomes root with sudo
    ready = make_tree(tmp_path / "ready")
    assert adapt.missing_packages(ready) == []


def _config(tmp_path, target) -> dict:
    root = make_tree(tmp_path / target.profile.target)
    adapt._cloud_config(root, target.profile)
    return yaml.safe_load((root / f"etc/cloud/cloud.cfg.d/95-rain-{target.profile.target}.cfg").read_text())


def test_each_cloud_gets_its_datasource_and_login_user(tmp_path):
    ec2 = _config(tmp_path, Ec2Target)
    assert ec2["datasource_list"] == ["Ec2", "None"]
    assert ec2["system_info"]["default_user"]["name"] == "admin" == Ec2Target.login_user
    assert ec2["datasource"]["Ec2"]["metadata_urls"] == ["http://169.254.169.254"]
    stack = _config(tmp_path, OpenStackTarget)
    assert stack["datasource_list"] == ["ConfigDrive", "OpenStack", "None"]
    assert stack["system_info"]["default_user"]["name"] == "debian" == OpenStackTarget.login_user
    one = _config(tmp_path, OpenNebulaTarget)
    assert one["datasource_list"] == ["OpenNebula", "None"]
    assert one["disable_root"] is False and OpenNebulaTarget.login_user == "root" and "system_info" not in one


def test_drivers_each_cloud_needs_at_first_boot():
    assert set(Ec2Target.profile.modules) == {"nvme", "ena"}
    assert {"virtio_blk", "virtio_net"} <= set(OpenStackTarget.profile.modules)
    assert {"virtio_blk", "virtio_net"} <= set(OpenNebulaTarget.profile.modules)


def test_vetting_the_adapted_copy_blocks_as_vetting_the_original_does(tmp_path):
    import pytest
    from support.images import make_bad_tree

    from rain.errors import VetFailed

    good = adapt.vet_adapted(make_tree(tmp_path / "good"), "deb (1)", OpenStackTarget.vet_policy, "openstack")
    assert good.verdict == "pass" and good.subject == "deb (1), adapted for openstack"
    with pytest.raises(VetFailed) as e:
        adapt.vet_adapted(make_bad_tree(tmp_path / "bad"), "deb (1)", OpenStackTarget.vet_policy, "openstack")
    assert "vetting failed for openstack" in e.value.message
    assert "after Rain adapted it for openstack" in (e.value.hint or "")


class _NoSandbox:
    """A sandbox adapt must not enter: entering it would run the image's own programs."""

    def session(self, root):  # noqa: ANN001, ANN201
        raise AssertionError("adapt ran image code for an image that has what the cloud needs")


def _with_initramfs(root, modules, builtin=""):  # noqa: ANN001, ANN202
    import zstandard
    from support.images import KVER, cpio

    (root / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    names = [f"usr/lib/modules/{KVER}/kernel/drivers/x/{m}.ko" for m in modules]
    (root / f"boot/initrd.img-{KVER}").write_bytes(zstandard.ZstdCompressor().compress(cpio("init", *names)))
    (root / f"lib/modules/{KVER}/modules.builtin").write_text(builtin)
    return root


def test_an_initramfs_that_already_loads_the_drivers_is_kept_and_no_image_code_runs(tmp_path):
    root = _with_initramfs(make_tree(tmp_path / "r"), ["virtio_blk", "virtio_scsi", "virtio_net"],
                           builtin="kernel/drivers/virtio/virtio_pci.ko\n")
    changes = adapt.cloud_disk(root, OpenStackTarget.profile, _NoSandbox())
    assert any(c.endswith("already loads virtio_pci, virtio_blk, virtio_scsi, virtio_net (not rebuilt)")
               for c in changes), changes
    assert "virtio_net" in (root / "etc/initramfs-tools/modules").read_text(), "later rebuilds keep them"


def test_a_missing_driver_or_an_unreadable_initramfs_means_a_rebuild(tmp_path):
    from support.images import KVER

    root = _with_initramfs(make_tree(tmp_path / "r"), ["nvme"])
    (root / f"lib/modules/{KVER}/modules.dep").write_text("kernel/drivers/net/ena/ena.ko:\n")
    assert adapt.initramfs_plan(root, ["nvme", "ena"]) == ([], [KVER])
    lines, rebuild = adapt.initramfs_plan(root, ["nvme", "no_such_driver"])
    assert rebuild == [] and "has no no_such_driver" in lines[0], "a rebuild cannot add what the kernel lacks"
    (root / f"boot/initrd.img-{KVER}").write_bytes(b"not an initramfs")
    assert adapt.initramfs_plan(root, ["nvme"]) == ([], [KVER])
