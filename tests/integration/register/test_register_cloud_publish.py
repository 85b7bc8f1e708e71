"""What each cloud target publishes besides the bytes, and what adapt does when it cannot install.

Sites: the real Keystone and Glance, the OpenNebula SIMULATOR, moto's real EC2 server (it accepts the
register_image parameters but does not return them, so those are read from the target itself
after botocore, which checks them against EC2's API model, sent them). Images are fake roots;
installing into a real Debian image runs in tests/e2e/register/test_register_contextualize.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.images import make_tarball, make_tree
from support.repository import upload

from rain.errors import BuildError, InvalidInput
from rain.register import chroot
from rain.register.models import Label, Packed
from rain.register.pipeline import register
from rain.register.targets.sites import open_target

pytestmark = pytest.mark.integration


def _mounts_under(root: Path) -> list[str]:
    real = str(root.resolve())
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(real + "/")]


def _packed(tmp_path: Path, fmt: str) -> Packed:
    """A small disk file as pack() would leave it (the publish step is what these tests look at)."""
    name = f"disk.{fmt}"
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "4M"], check=True)
    if fmt == "raw":
        with open(path, "r+b") as f:
            f.write(b"rain" * 1024)
    return Packed(tmp_path, {name: path}, name, fmt)


LABEL = Label("0123456789ab", "deb", "debian", "12", "x86_64")


def test_openstack_publishes_the_glance_properties_nova_boots_by(sites, tmp_path):
    target, _ = open_target(sites.settings, "openstack")
    props = sites["openstack"].backend.images[target.publish(_packed(tmp_path, "qcow2"), LABEL)]
    assert {k: props[k] for k in ("hw_firmware_type", "hw_disk_bus", "os_distro", "os_version", "architecture")} \
        == {"hw_firmware_type": "bios", "hw_disk_bus": "virtio", "os_distro": "debian", "os_version": "12",
            "architecture": "x86_64"}
    sites.rewrite("openstack", firmware="uefi")
    target, _ = open_target(sites.settings, "openstack")
    again = target.publish(_packed(tmp_path, "qcow2"), LABEL)
    assert sites["openstack"].backend.images[again]["hw_firmware_type"] == "uefi"


def test_opennebula_image_template_has_virtio_qcow2_and_the_firmware(sites, tmp_path):
    sites.rewrite("opennebula", firmware="uefi")
    target, _ = open_target(sites.settings, "opennebula")
    image_id = target.publish(_packed(tmp_path, "qcow2"), LABEL)
    template = sites["opennebula"].backend.images[int(image_id)].template
    assert (template["DEV_PREFIX"], template["DRIVER"], template["RAIN_FIRMWARE"]) == ("vd", "qcow2", "UEFI")


def test_ec2_registers_an_ami_with_the_sites_boot_mode_ena_and_imdsv2(sites, tmp_path):
    sites.rewrite("ec2", firmware="uefi-preferred")
    target, _ = open_target(sites.settings, "ec2")
    ami = target.publish(_packed(tmp_path, "raw"), LABEL)  # botocore checked every parameter against EC2's model
    assert sites["ec2"].holds(ami)
    params = target.image_params(LABEL, "snap-0")  # type: ignore[attr-defined]
    assert (params["BootMode"], params["EnaSupport"], params["ImdsSupport"], params["RootDeviceName"]) \
        == ("uefi-preferred", True, "v2.0", "/dev/xvda")
    assert params["BlockDeviceMappings"][0]["DeviceName"] == params["RootDeviceName"]


def test_bad_firmware_setting_is_refused_before_anything_moves(sites, repos, clean_tarball):
    sites.rewrite("openstack", firmware="efi")
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    with pytest.raises(InvalidInput) as e:
        register(alice, sites.settings, image.id, "openstack")
    assert "firmware" in e.value.message and "'bios' or 'uefi'" in e.value.message
    assert sites["openstack"].published() == 0


def test_each_target_names_its_login_user():
    from rain.register.targets.base import TargetName

    users = {t.value: t.load().login_user for t in TargetName}
    assert users == {"hpc": "root", "opennebula": "root", "openstack": "debian", "ec2": "admin"}


def _debian_without_cloud_init(root: Path) -> Path:
    """A fake Debian root with a dpkg database but no apt: the chroot starts, apt-get cannot run."""
    make_tree(root, cloud=False)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("Package: dpkg\nStatus: install ok installed\nPriority: required\n"
                                              "Architecture: amd64\nVersion: 1.21.22\n\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    return root


def test_a_failure_inside_the_chroot_leaves_no_mount_or_file_behind(tmp_path, sites):
    root = _debian_without_cloud_init(tmp_path / "root")
    with chroot.session(root) as ch:
        with pytest.raises(BuildError):  # enters (mounts, policy-rc.d, resolv.conf), then: no `true` here
            ch.run(["true"], what="entering")
        assert _mounts_under(root) and (root / "usr/sbin/policy-rc.d").exists()
    assert _mounts_under(root) == []
    with pytest.raises(BuildError) as e:  # the sites' adapt_builder is local: a chroot on this host
        chroot.run_in_image(chroot.Sandbox(sites.settings), root, ["cloud-init"])
    assert "apt-get update" in e.value.message and "\n" not in e.value.message
    assert _mounts_under(root) == []
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert list((root / "tmp").iterdir()) == []


def test_register_that_fails_while_installing_publishes_nothing(tmp_path, sites, repos):
    tarball = make_tarball(_debian_without_cloud_init(tmp_path / "root"), tmp_path / "img.tar.zst")
    alice = repos("alice")
    image = upload(alice, tarball)
    with pytest.raises(BuildError) as e:
        register(alice, sites.settings, image.id, "openstack")
    assert "apt-get update" in e.value.message
    assert sites["openstack"].published() == 0 and alice.show(image.id).registrations == []
    assert not [m for m in open("/proc/mounts").read().splitlines() if "rain-register-" in m]


def test_a_failure_in_the_sandbox_vm_leaves_no_vm_no_work_files_and_publishes_nothing(tmp_path, sites, repos,
                                                                                  qemu_bundle):
    """adapt's default sandbox: the qemu builder VM boots, gets the copy, apt-get fails in its chroot; the
    error names the step, the VM is gone, register's work directory is gone, nothing is published."""
    import glob

    from support.builders import qemu_pids

    tarball = make_tarball(_debian_without_cloud_init(tmp_path / "root"), tmp_path / "img.tar.zst")
    alice = repos("alice")
    image = upload(alice, tarball)
    settings = sites.settings.with_overrides(adapt_builder="qemu", builders_file=str(qemu_bundle[1]))
    before = set(glob.glob("/tmp/rain-register-*"))
    with pytest.raises(BuildError) as e:
        register(alice, settings, image.id, "openstack")
    import re

    vm = re.search(r"on builder (rain-register-adapt-[0-9a-f]+)", e.value.message)
    assert "apt-get update" in e.value.message and vm, e.value.message
    assert qemu_pids(vm[1]) == [], "the sandbox VM is gone"
    assert set(glob.glob("/tmp/rain-register-*")) == before
    assert sites["openstack"].published() == 0 and alice.show(image.id).registrations == []
    log = settings.data_path / "adapt-logs" / f"{image.id}-openstack.log"
    assert "apt-get" in log.read_text(errors="replace"), "what the image's programs printed is kept for the user"


def test_commands_in_the_sandbox_vm_change_the_copy_and_only_the_copy(tmp_path, sites, qemu_bundle):
    """What update-initramfs does in the VM, with a static busybox as the image's program: the tree goes in,
    the command's changes (new files with owner and mode, removed files and directories, a directory
    replaced by a file) come back through the safe unpacker, the rest is as it was, the host is untouched."""
    import os
    import shutil

    from support.builders import qemu_pids

    root = _debian_without_cloud_init(tmp_path / "root")
    shutil.copy2("/bin/busybox", root / "usr/bin/busybox")
    (root / "boot/keep").write_text("from the host\n")
    settings = sites.settings.with_overrides(adapt_builder="qemu", builders_file=str(qemu_bundle[1]))
    sandbox = chroot.Sandbox(settings, None, tmp_path / "adapt.log")
    chroot.run_in_image(sandbox, root, [], [
        (["/usr/bin/busybox", "sh", "-c", "echo made in the VM > /boot/initrd.img-new; "
          "chown 1234:5678 /boot/initrd.img-new; chmod 0600 /boot/initrd.img-new; "
          "echo escaped > /tmp/../../host-escape; rm /boot/keep; rm -r /etc/apt; rm -r /home; "
          "echo now a file > /home"], "a command that edits the image"),
    ])
    made = root / "boot/initrd.img-new"
    assert made.read_text() == "made in the VM\n"
    assert (made.stat().st_uid, made.stat().st_gid, made.stat().st_mode & 0o777) == (1234, 5678, 0o600)
    assert not (root / "boot/keep").exists(), "the copy is what the VM left, not a merge"
    assert not (root / "etc/apt").exists() and (root / "home").read_text() == "now a file\n"
    # a qemu VM gets the copy read-only and returns only the changes, laid over the copy here: what the
    # command left alone is there as it was, and the adapt log says which way the copy went
    assert "alice:x:1000" in (root / "etc/passwd").read_text() and (root / "etc/shadow").stat().st_mode & 0o777 == 0o640
    assert (root / "usr/bin/su").stat().st_mode & 0o7777 == 0o4755 and os.readlink(root / "bin") == "usr/bin"
    log = (tmp_path / "adapt.log").read_text(errors="replace")
    assert "rain: the copy is on the builder read-only, under an overlay: only the changes come back" in log
    assert (root / "host-escape").read_text() == "escaped\n" and not os.path.exists("/host-escape")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rain-adapt-")], "the sandbox's work is gone"
    assert qemu_pids(str(tmp_path)) == []


def test_rpm_family_image_without_cloud_init_says_what_to_add_to_the_recipe(tmp_path, sites, repos):
    root = make_tree(tmp_path / "root", cloud=False)
    (root / "etc/os-release").write_text('ID=rocky\nVERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4"\n')
    alice = repos("alice")
    image = upload(alice, make_tarball(root, tmp_path / "rocky.tar.zst"))
    with pytest.raises(InvalidInput) as e:
        register(alice, sites.settings, image.id, "opennebula")
    assert "Rocky Linux 9.4" in e.value.message and "cloud-init" in (e.value.hint or "")
    assert sites["opennebula"].published() == 0
