"""Acceptance 3 of issue #10: an image without cloud-init registered on openstack gains contextualization,
for real, and boots as OpenStack would boot it; the image's own programs run only in the builder VM.

The image is recipes/debian-bookworm-kernel.yaml as `fg-image generate` builds it (no cloud-init, no DHCP
client), cloned by `generate` with python3, ca-certificates and locales added: those three are what takes
longest to configure under TCG, and a chroot on this host adds them in seconds. `fg-image register
--target openstack` installs cloud-init, cloud-guest-utils and isc-dhcp-client with their 30-odd other
dependencies from bookworm through the host's mirror inside the default adapt sandbox: a qemu builder VM
(TCG here, about 4 minutes on 2 cores), and finds the virtio drivers already in the initramfs (read, not
run). ONE registration is made and several things are asserted on it: what the registration and `show`
report, what Glance (the real one, tests/support/openstack_cloud.py) received, what the published disk
holds (read back by register's own unpack of the derived image), and that no VM is left. The initramfs
rebuild in the sandbox runs in tests/integration/register/test_register_cloud_publish.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
import zstandard
from test_register_debian_e2e import upload

from rain.image import initramfs
from rain.register.unpack import unpack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SECRETS = ("RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_OS_PASSWORD", "RAIN_TEST_AWS_KEY", "RAIN_TEST_AWS_SECRET")
VERSION = r"\d[\w.+~:-]*"


@pytest.mark.timeout(2700)
def test_openstack_copy_of_an_image_without_cloud_init_gains_contextualization(fg, sites, debian_tarball,
                                                                              qemu_bundle, tmp_path):
    import os

    from support.builders import qemu_pids

    scratch = tmp_path / "tmp"  # register's work dir, and so the sandbox VM's files: its qemu is this test's
    scratch.mkdir()
    env = {"RAIN_TARGETS_FILE": str(sites.path), "RAIN_BUILDERS_FILE": str(qemu_bundle[1]),
           "TMPDIR": str(scratch), **{k: os.environ[k] for k in SECRETS}}
    kernel_id = upload(fg, debian_tarball, env)
    clone = tmp_path / "python.yaml"
    clone.write_text(f"name: kernel-python\nos: {{family: debian, release: bookworm}}\nbase: {kernel_id}\n"
                     "packages: [python3, ca-certificates, locales]\nformats: [tar.zst]\n")
    made = fg("generate", str(clone), "--output", str(tmp_path / "python"), env=env, timeout=600)
    assert made.returncode == 0, made.stderr
    image_id = made.stdout.strip()
    result = fg("register", image_id, "--target", "openstack", "--boot-test", "--json", env=env, timeout=2400)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    changes = outcome["changes"]

    # acceptance 3: the copy boots as OpenStack boots it (config drive, virtio) to an SSH login as `debian`
    assert "boot-test" in outcome["timings"]
    log = (tmp_path / "rain-data" / "boot-logs" / f"{image_id}-openstack.log").read_text(errors="replace")
    assert "Cloud-init v." in log and "GNU GRUB" in log

    # the registration lists each added package with its version, and the initramfs work
    for pkg in ("cloud-init", "cloud-guest-utils", "isc-dhcp-client", "sudo"):
        assert any(re.fullmatch(rf"installed {pkg} {VERSION}", c) for c in changes), (pkg, changes)
    assert any(c.startswith("installed ") and "dependencies: " in c and "python3-yaml " in c for c in changes)
    assert "/etc/initramfs-tools/modules: added virtio_pci virtio_blk virtio_scsi virtio_net" in changes
    assert any(re.fullmatch(r"the initramfs for 6\.\S+ already loads virtio_pci, virtio_blk, virtio_scsi, "
                            r"virtio_net \(not rebuilt\)", c) for c in changes), changes
    assert qemu_pids(str(scratch)) == []  # the sandbox VM is gone

    # the derived image's provenance holds the same lines, and `show` prints them
    derived = json.loads(fg("show", outcome["derived_image"], "--json", env=env).stdout)
    assert derived["provenance"]["changes"] == changes
    shown = fg("show", outcome["derived_image"], env=env).stdout
    assert re.search(rf"^adapted\s+installed cloud-init {VERSION}", shown, re.M), shown
    assert re.search(rf"^provenance\s+derived from {image_id} for openstack@default", shown, re.M), shown

    # Glance got the properties Nova picks firmware and bus by
    glance = sites["openstack"].backend.images[outcome["remote_id"]]
    assert (glance["hw_firmware_type"], glance["hw_disk_bus"], glance["os_distro"], glance["os_version"]) \
        == ("bios", "virtio", "debian", "12")

    # what the image's code had in its hands never feeds the package cache other builds use
    cache = tmp_path / "rain-data" / "cache" / "packages" / "debian-bookworm-amd64"
    assert not list(cache.glob("cloud-init_*.deb"))

    # the published disk, read back the way register reads a qcow2
    blob = tmp_path / "derived.qcow2"
    assert fg("download", outcome["derived_image"], "-o", str(blob), env=env, timeout=600).returncode == 0
    root = tmp_path / "derived-root"
    unpack(blob, root, "qcow2")
    blob.unlink()
    for tool in ("usr/bin/cloud-init", "usr/bin/growpart", "sbin/dhclient", "usr/bin/sudo"):
        assert (root / tool).is_file(), tool
    cfg = yaml.safe_load((root / "etc/cloud/cloud.cfg.d/95-rain-openstack.cfg").read_text())
    assert cfg["datasource_list"] == ["ConfigDrive", "OpenStack", "None"]
    assert cfg["system_info"]["default_user"]["name"] == "debian"
    modules = (root / "etc/initramfs-tools/modules").read_text().split()
    assert {"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"} <= set(modules)
    [initrd] = list((root / "boot").glob("initrd.img-*"))
    names = initramfs.listing(initrd.read_bytes())  # Rain's bounded reader, unit-tested on hand-made archives
    assert names is not None
    kver = initrd.name.removeprefix("initrd.img-")
    assert {"virtio_blk", "virtio_scsi"} <= initramfs.module_names(names, kver)
    # nothing of the chroot or of apt's private state stayed in the image
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert not list((root / "tmp").glob("rain-apt-*"))
    assert not [p for p in (root / "var/lib/apt/lists").iterdir() if p.name.endswith("Packages")]
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))
    # and the original in the repository is untouched: as stored, its tarball still has no cloud-init
    original = tmp_path / "original.tar.zst"
    assert fg("download", image_id, "-o", str(original), env=env, timeout=600).returncode == 0
    assert _has_member(original, "./usr/bin/python3") and not _has_member(original, "./usr/bin/cloud-init")


def _has_member(tarball: Path, name: str) -> bool:
    import tarfile

    with open(tarball, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tf:
        return any(m.name == name for m in tf)
