"""Targets without their sites: the targets file, adaptations, the hpc initrd and boot descriptions."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import yaml
from support.images import KVER, make_tree

from rain.config import load_settings
from rain.errors import ConfigError, InvalidInput
from rain.generate.recipe import OsFamily
from rain.image.disk import ROOT_LABEL
from rain.image.sysprep import generalize
from rain.register import adapt
from rain.register.initrd import build_initrd, module_order
from rain.register.models import Label, Packed
from rain.register.targets.hpc import MARKER, HpcSite, HpcTarget
from rain.register.targets.sites import open_target
from rain.releases import RELEASES


def settings_with(tmp_path: Path, targets: object | None, raw: str | None = None):
    path = tmp_path / "targets.yaml"
    if raw is not None:
        path.write_text(raw)
    elif targets is not None:
        path.write_text(yaml.safe_dump(targets))
    return load_settings(environ={"RAIN_CONFIG": str(tmp_path / "none.toml"), "RAIN_DATA_DIR": str(tmp_path),
                                  "RAIN_TARGETS_FILE": str(path)})


STACK = {"auth_url": "http://k.invalid/v3", "username": "u", "project_name": "p", "password_env": "RAIN_UT_PW"}


def test_missing_targets_file_says_where_to_put_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        open_target(settings_with(tmp_path, None), "ec2")
    assert "targets.yaml" in e.value.message and "docs/targets.md" in e.value.hint


def test_bad_yaml_and_unknown_target_names(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        open_target(settings_with(tmp_path, None, raw="ec2: [unclosed"), "ec2")
    with pytest.raises(InvalidInput) as e:
        open_target(settings_with(tmp_path, {"azure": {"x": {}}}), "ec2")
    assert "azure" in e.value.message and "openstack" in e.value.hint


def test_credentials_only_by_reference(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        open_target(settings_with(tmp_path, {"openstack": {"lab": {**STACK, "password": "plain"}}}), "openstack")
    assert "password" in e.value.message and "password_env" in e.value.hint
    both = {**STACK, "password_file": "/x"}
    with pytest.raises(ConfigError, match="not both"):
        open_target(settings_with(tmp_path, {"openstack": {"lab": both}}), "openstack")
    monkeypatch.delenv("RAIN_UT_PW", raising=False)
    with pytest.raises(ConfigError) as e:
        open_target(settings_with(tmp_path, {"openstack": {"lab": STACK}}), "openstack")
    assert "RAIN_UT_PW" in e.value.message
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    by_file = {**STACK, "password_env": None, "password_file": str(secret)}
    target, site = open_target(settings_with(tmp_path, {"openstack": {"lab": by_file}}), "openstack")
    assert site == "lab" and target._login.plugin._password == "s3cret"  # keystoneauth1's generic plugin


def test_site_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("RAIN_UT_PW", "x")
    two = settings_with(tmp_path, {"openstack": {"a": STACK, "b": STACK}})
    with pytest.raises(ConfigError) as e:
        open_target(two, "openstack")
    assert "--site" in e.value.message and "a, b" in e.value.hint
    assert open_target(two, "openstack", "b")[1] == "b"


def test_generalize_and_cloud_init(tmp_path):
    root = make_tree(tmp_path / "r", cloud=False)
    (root / "etc/ssh/ssh_host_rsa_key").write_text("k")
    (root / "usr/sbin/sshd").write_text("")
    changes = generalize(root)
    assert (root / "etc/machine-id").read_text() == "" and not (root / "etc/ssh/ssh_host_rsa_key").exists()
    assert (root / "etc/systemd/system/multi-user.target.wants/rain-ssh-hostkeys.service").is_symlink()
    assert any("ssh-keygen -A" in c for c in changes)
    notes = adapt.cloud_init(root, "openstack", ["ConfigDrive", "OpenStack"])
    cfg = yaml.safe_load((root / "etc/cloud/cloud.cfg.d/95-rain-openstack.cfg").read_text())
    assert cfg["datasource_list"] == ["ConfigDrive", "OpenStack", "None"]
    assert any("cloud-init is not installed" in n for n in notes)


def test_adapt_never_writes_through_a_link_out_of_the_image(tmp_path):
    outside = tmp_path / "host-etc"
    outside.mkdir()
    root = make_tree(tmp_path / "r")
    (root / "etc/fstab").symlink_to(outside / "fstab")
    adapt.disk_fstab(root)
    assert not (outside / "fstab").exists() and f"LABEL={ROOT_LABEL}" in (root / "etc/fstab").read_text()


def fake_modules(root: Path) -> None:
    mods = root / "lib/modules" / KVER
    for rel in ("kernel/drivers/net/virtio_net.ko", "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko", "kernel/fs/squashfs/squashfs.ko"):
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"\x7fELF" + rel.encode())
    (mods / "modules.dep").write_text(
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n"
        "kernel/fs/squashfs/squashfs.ko:\n")


def cpio_names(path: Path) -> dict[str, bytes]:
    data, files, pos = gzip.decompress(path.read_bytes()), {}, 0
    while True:
        header = data[pos:pos + 110]
        namesize, filesize = int(header[94:102], 16), int(header[54:62], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return files
        files[name] = data[pos:pos + filesize]
        pos += filesize + (-filesize % 4)


def test_initrd_has_init_busybox_and_modules_in_dependency_order(tmp_path):
    root = make_tree(tmp_path / "r")
    fake_modules(root)
    order = module_order(root, KVER)
    assert order.index("kernel/net/core/failover.ko") < order.index("kernel/drivers/net/net_failover.ko") \
        < order.index("kernel/drivers/net/virtio_net.ko")
    files = cpio_names(build_initrd(root, KVER, tmp_path / "initrd.img"))
    init = files["init"].decode()
    assert "rain.root=" in init and "switch_root /newroot /sbin/init" in init and "overlay" in init
    assert init.index("failover.ko") < init.index("virtio_net.ko")
    assert files["bin/busybox"][:4] == b"\x7fELF" and "lib/modules/kernel/fs/squashfs/squashfs.ko" in files


def test_hpc_publish_writes_every_boot_description_and_delete_removes_them(tmp_path):
    site = HpcSite(provision_dir=tmp_path / "prov", http_url="http://head.invalid:8080/rain/")
    target = HpcTarget(site, "default", load_settings(environ={"RAIN_CONFIG": str(tmp_path / "none")}))
    root = make_tree(tmp_path / "r")
    assert any(MARKER in c for c in target.adapt(root))
    assert (root / "etc/systemd/system/multi-user.target.wants/rain-boot-marker.service").is_symlink()
    out = tmp_path / "out"
    out.mkdir()
    files = {n: out / n for n in ("vmlinuz", "initrd.img", "rootfs.squashfs")}
    for p in files.values():
        p.write_bytes(b"x")
    label = Label("0123456789ab", "deb", "debian", "12")
    rid = target.publish(Packed(out, files, "rootfs.squashfs", "squashfs"), label)
    dest = site.provision_dir / rid
    ipxe = (dest / "boot.ipxe").read_text()
    assert ipxe.startswith("#!ipxe") and f"rain.root=http://head.invalid:8080/rain/{rid}/rootfs.squashfs" in ipxe
    assert "objtype=osimage" in (dest / "xcat-osimage.stanza").read_text()
    ww = yaml.safe_load((dest / "warewulf-image.yaml").read_text())
    assert ww["rootfs"]["type"] == "squashfs" and ww["source_image"] == "0123456789ab"
    assert (site.provision_dir / "pxelinux.cfg" / rid).read_text() == (dest / "pxelinux.entry").read_text()
    target.delete(rid)
    assert not dest.exists() and not os.listdir(site.provision_dir / "pxelinux.cfg")


def test_openstack_os_version_is_the_release_number_whichever_name_the_image_was_stored_under(tmp_path,
                                                                                              monkeypatch):
    """Nova and libosinfo read os_version as the distributor's version: a generated image's release is the
    recipe's codename, an uploaded one's what --release said."""
    monkeypatch.setenv("RAIN_UT_PW", "pw")
    target, _ = open_target(settings_with(tmp_path, {"openstack": {"lab": STACK}}), "openstack")
    versions = {(family, release): target.properties(Label("0123456789ab", "x", family, release))["os_version"]
                for family, release in [("debian", "bookworm"), ("debian", "12"), ("ubuntu", "jammy"),
                                        ("Debian", "Bookworm"), ("debian", "unstable"), ("centos", "stream9"),
                                        ("rocky", "9"), ("linux", "7.1")]}
    assert versions == {("debian", "bookworm"): "12", ("debian", "12"): "12", ("ubuntu", "jammy"): "22.04",
                        ("Debian", "Bookworm"): "12", ("debian", "unstable"): "sid", ("centos", "stream9"): "9",
                        ("rocky", "9"): "9", ("linux", "7.1"): "7.1"}
    # the table knows every family a recipe may name (a family missing there fails every recipe of it)
    assert set(RELEASES) == {f.value for f in OsFamily}
