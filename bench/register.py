"""Register adapt+pack time per target, against the plain tools doing the same conversion.

    .venv/bin/python bench/register.py [IMAGE.tar.zst] [--boot CLOUD.qcow2 [--only-boot]] [--json FILE]

IMAGE defaults to the register tests' cached recipes/debian-bookworm-cloud.yaml
image (built with mmdebstrap from the host's apt sources on first use): what a
user registers on a cloud, with cloud-init and the drivers already in its
initramfs, so adapt runs none of the image's programs. An image without them
has adapt install them in the `adapt_builder` sandbox (a qemu VM by default),
and that time is in the figures. The image is unpacked
once; each target then gets a fresh copy of the tree (not timed) and Rain's
adapt + pack is timed against the plain commands producing the same format
with the same options, run on another fresh copy:

    hpc         mksquashfs TREE rootfs.squashfs -comp zstd -Xcompression-level 3   (+ kernel copy)
    opennebula  sfdisk (GPT) + mkfs.ext4 -E offset -d TREE disk.raw ; qemu-img convert -c -O qcow2 (zstd)
    openstack   same as opennebula
    ec2         sfdisk (GPT) + mkfs.ext4 -E offset -d TREE disk.raw

(the plain disk has no boot loaders: Rain's GRUB for BIOS and UEFI is part of its overhead).

Prints seconds and the ratio rain/plain from one run; no thresholds. Rain's
extra work (initrd, adaptations, checks) shows up as the ratio above 1.

With --boot, a bootable cloud qcow2 (e.g. `fg-image generate` of
recipes/debian-bookworm-cloud.yaml; default user `debian`) is also booted to an
SSH login under TCG, the way each target's boot test does it
(rain.register.vm.boot_to_ssh with that cloud's metadata path), next to the
plain tools doing the same: xorriso for a NoCloud seed, qemu-system-x86_64
-snapshot on the disk, and `ssh` retried until it logs in. The issue's goal is
boot-to-SSH <= 120 s under TCG for the minimal cloud recipe.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, Section, add_json_option, write_json

from rain.config import load_settings
from rain.host.qemu import TCG_CPU
from rain.host.ssh import KeyPair
from rain.image import disk as image_disk
from rain.register import imds, seeds, vm
from rain.register.chroot import Sandbox
from rain.register.targets.base import TargetName
from rain.register.unpack import unpack

HERE = Path(__file__).resolve().parent
SITES = {
    "hpc": {"provision_dir": "/nonexistent", "http_url": "http://head.invalid/rain"},
    "opennebula": {"endpoint": "http://one.invalid:2633/RPC2", "username": "u", "password_env": "BENCH_PW",
                   "staging_dir": "/nonexistent"},
    "openstack": {"auth_url": "http://k.invalid/v3", "username": "u", "project_name": "p",
                  "password_env": "BENCH_PW"},
    "ec2": {"region": "us-east-1", "access_key_id_env": "BENCH_PW", "secret_access_key_env": "BENCH_PW"},
}

PLAIN = {"hpc": "mksquashfs (zstd -3) + kernel copy", "opennebula": "sfdisk + mkfs.ext4 -d + qemu-img (zstd)",
         "openstack": "sfdisk + mkfs.ext4 -d + qemu-img (zstd)", "ec2": "sfdisk + mkfs.ext4 -d"}
"""What each target's figure is set against: the plain commands making the same format."""


def copy_tree(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", f"{src}/.", str(dest)], check=True)
    return dest


def plain(target: str, tree: Path, out: Path) -> None:
    if target == "hpc":
        subprocess.run(["mksquashfs", str(tree), str(out / "rootfs.squashfs"), "-noappend", "-comp", "zstd",
                        "-Xcompression-level", "3", "-quiet", "-no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        kernel = sorted((tree / "boot").glob("vmlinuz-*"))[-1]
        subprocess.run(["cp", str(kernel), str(out / "vmlinuz")], check=True)
        return
    raw = out / "disk.raw"  # the same GPT layout as Rain's disk, without the boot loaders
    size = int(image_disk.tree_size(tree) * 1.25) + (256 << 20)
    size = (size + (1 << 20) - 1) // (1 << 20) * (1 << 20)
    with open(raw, "wb") as f:
        f.truncate(image_disk.ROOT_START + size + image_disk.GPT_TAIL)
    subprocess.run(["sfdisk", "--quiet", str(raw)], check=True,
                   input=f"label: gpt\nstart={image_disk.ROOT_START // 512}, size={size // 512}\n".encode())
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={image_disk.ROOT_START}", "-d", str(tree), str(raw),
                    f"{size // 1024}k"], check=True)
    if target in ("opennebula", "openstack"):
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
                        "-m", "2", "-W", str(raw), str(out / "disk.qcow2")], check=True)


BOOTS = ("nocloud-bios", "nocloud-uefi", "openstack", "opennebula", "ec2")
USER = "debian"  # the default user of Debian's cloud-init configuration


def rain_boot(kind: str, image: Path, work: Path) -> float:
    """One target's boot test, as Rain runs it: seconds from QEMU's start to the SSH login."""
    key = KeyPair.generate("rain-bench")
    seed = work / f"{kind}.iso"
    extra: dict[str, object] = {}
    if kind.startswith("nocloud"):
        extra = {"cdrom": seeds.nocloud(seed, instance_id="i-bench", host="bench", key=key.public_line),
                 "firmware": kind.removeprefix("nocloud-")}
    elif kind == "openstack":
        extra = {"cdrom": seeds.config_drive(seed, uuid="0f8e4c2a-1111-4222-8333-444455556666", name="bench",
                                             host="bench", key=key.public_line, net=seeds.GuestNet()),
                 "smbios": vm.smbios_openstack()}
    elif kind == "opennebula":
        extra = {"cdrom": seeds.opennebula(seed, host="bench", key=key.public_line, user=USER)}
    else:
        extra = {"bus": "nvme", "imds": imds.Instance(key=key.public_line), "smbios": vm.smbios_ec2()}
    result = vm.boot_to_ssh(image, "qcow2", user=USER, key=key, log_path=work / f"{kind}-console.log",
                            timeout=900, **extra)  # type: ignore[arg-type]
    return result.seconds


def plain_boot(image: Path, work: Path) -> float:
    """The same with plain tools: a NoCloud seed by xorriso, qemu -snapshot, ssh until it logs in."""
    keyfile = work / "plain-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keyfile)], check=True)
    tree = work / "plain-seed"
    tree.mkdir()
    (tree / "meta-data").write_text("instance-id: i-plain\nlocal-hostname: plain\n")
    public = (work / "plain-key.pub").read_text().strip()
    (tree / "user-data").write_text(f"#cloud-config\nssh_authorized_keys: ['{public}']\n")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(work / "plain.iso"), "-V", "cidata", "-J", "-R",
                    str(tree)], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    qemu = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-cpu", TCG_CPU, "-smp", "2",
                             "-m", "1024", "-display", "none", "-snapshot", "-serial", f"file:{work / 'plain.log'}",
                             "-drive", f"file={image},if=virtio,format=qcow2",
                             "-drive", f"file={work / 'plain.iso'},if=none,id=cd,media=cdrom,format=raw",
                             "-device", "virtio-scsi-pci", "-device", "scsi-cd,drive=cd",  # cloud kernel: no AHCI
                             "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while qemu.poll() is None and time.monotonic() - start < 900:
            ssh = subprocess.run(["ssh", "-q", "-i", str(keyfile), "-p", str(port), "-o", "BatchMode=yes",
                                  "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                  "-o", "ConnectTimeout=10", f"{USER}@127.0.0.1", "true"],
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            if ssh.returncode == 0:
                return time.monotonic() - start
            time.sleep(2)
        raise SystemExit(f"plain boot of {image} did not reach SSH (console: {work / 'plain.log'})")
    finally:
        qemu.kill()
        qemu.wait()


def bench_boots(image: Path) -> Section:
    with tempfile.TemporaryDirectory(prefix="rain-bench-boot-") as tmp:
        work = Path(tmp)
        plain_s = plain_boot(image, work)
        print(f"boot {image.name} to SSH under TCG (plain qemu + NoCloud + ssh: {plain_s:.1f}s)")
        print(f"{'boot test':<14}{'rain boot-to-SSH s':>20}{'plain s':>10}{'ratio':>8}")
        rows = []
        for kind in BOOTS:
            rain_s = rain_boot(kind, image, work)
            print(f"{kind:<14}{rain_s:>20.1f}{plain_s:>10.1f}{rain_s / plain_s:>8.2f}")
            rows.append(Row(f"{kind} boot to SSH (TCG)", rain_s, "plain qemu + NoCloud seed + ssh", plain_s))
    notes = [f"image {image.name}; the issue's goal is boot-to-SSH <= 120 s under TCG for the minimal cloud recipe "
             "(an absolute time, not a ratio)"]
    return Section("register: boot to SSH", rows, notes=notes)


def main() -> None:
    parser = argparse.ArgumentParser(description="register adapt+pack and boot-to-SSH times against plain tools")
    parser.add_argument("image", nargs="?", type=Path, help="image tarball (default: the tests' Debian image)")
    parser.add_argument("--boot", type=Path, help="a bootable cloud qcow2 to boot under each target's metadata")
    parser.add_argument("--only-boot", action="store_true", help="skip the adapt+pack figures")
    add_json_option(parser)
    args = parser.parse_args()
    sections = []
    if args.boot:
        sections.append(bench_boots(args.boot.resolve()))
    if not args.only_boot:
        sections.append(bench_packs(args.image))
    write_json(args.json, sections)


def bench_packs(image: Path | None) -> Section:
    os.environ.setdefault("BENCH_PW", "unused")  # the targets need a credential reference; nothing is published
    if image is None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from support.built_images import build_cloud_image

        image = build_cloud_image() / "debian-bookworm-cloud.tar.zst"
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="rain-bench-") as tmp:
        work = Path(tmp)
        start = time.monotonic()
        unpack(image, work / "tree")
        unpacked = f"image {image.name}: unpacked in {time.monotonic() - start:.1f}s (not in the figures)"
        print(unpacked)
        rows = []
        print(f"{'target':<12}{'rain adapt+pack s':>19}{'plain tools s':>15}{'ratio':>8}")
        for name in TargetName:
            cls = name.load()
            target = cls(cls.site_model.model_validate(SITES[name.value]), "bench", settings)
            rain_tree = copy_tree(work / "tree", work / f"{name.value}-rain")
            start = time.monotonic()
            target.adapt(rain_tree, Sandbox(settings))
            target.pack(rain_tree, work / f"{name.value}-rain-out")
            rain_s = time.monotonic() - start
            plain_tree = copy_tree(work / "tree", work / f"{name.value}-plain")
            out = work / f"{name.value}-plain-out"
            out.mkdir()
            start = time.monotonic()
            plain(name.value, plain_tree, out)
            plain_s = time.monotonic() - start
            print(f"{name.value:<12}{rain_s:>19.1f}{plain_s:>15.1f}{rain_s / plain_s:>8.2f}")
            rows.append(Row(f"{name.value} adapt + pack", rain_s, PLAIN[name.value], plain_s))
            leftovers = [rain_tree, plain_tree, out, work / f"{name.value}-rain-out"]
            subprocess.run(["rm", "-rf", *map(str, leftovers)], check=True)
    notes = [unpacked, "the plain disks have no boot loaders: Rain's GRUB for BIOS and UEFI is part of its overhead"]
    return Section("register: adapt + pack", rows, notes=notes)


if __name__ == "__main__":
    main()
