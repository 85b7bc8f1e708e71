"""Register adapt+pack time per target, against the plain tools doing the same conversion.

    .venv/bin/python bench/register.py [IMAGE.tar.zst]

IMAGE defaults to the register tests' cached Debian bookworm image (built with
mmdebstrap from the host's apt sources on first use). The image is unpacked
once; each target then gets a fresh copy of the tree (not timed) and Rain's
adapt + pack is timed against the plain commands producing the same format
with the same options, run on another fresh copy:

    hpc         mksquashfs TREE rootfs.squashfs -comp zstd -Xcompression-level 3   (+ kernel copy)
    opennebula  sfdisk + mkfs.ext4 -E offset -d TREE disk.raw ; qemu-img convert -c -O qcow2 (zstd)
    openstack   same as opennebula
    ec2         sfdisk + mkfs.ext4 -E offset -d TREE disk.raw

Prints seconds and the ratio rain/plain from one run; no thresholds. Rain's
extra work (initrd, adaptations, checks) shows up as the ratio above 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rain.config import load_settings
from rain.register import disk
from rain.register.targets.base import TargetName, target_class
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
    raw = out / "disk.raw"
    size = int(disk.tree_size(tree) * 1.25) + (256 << 20)
    size = (size + (1 << 20) - 1) // (1 << 20) * (1 << 20)
    with open(raw, "wb") as f:
        f.truncate(disk.PART_OFFSET + size)
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=b"label: dos\nstart=2048, type=83\n", check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={disk.PART_OFFSET}", "-d", str(tree), str(raw),
                    f"{size // 1024}k"], check=True)
    if target in ("opennebula", "openstack"):
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
                        "-m", "2", "-W", str(raw), str(out / "disk.qcow2")], check=True)


def main() -> None:
    os.environ.setdefault("BENCH_PW", "unused")  # the targets need a credential reference; nothing is published
    if len(sys.argv) > 1:
        image = Path(sys.argv[1])
    else:
        sys.path.insert(0, str(HERE.parent / "tests" / "e2e" / "register"))
        from debian_image import build_debian_tarball

        image = build_debian_tarball()
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="rain-bench-") as tmp:
        work = Path(tmp)
        start = time.monotonic()
        unpack(image, work / "tree")
        print(f"image {image.name}: unpacked in {time.monotonic() - start:.1f}s (not in the figures below)")
        print(f"{'target':<12}{'rain adapt+pack s':>19}{'plain tools s':>15}{'ratio':>8}")
        for name in TargetName:
            cls = target_class(name)
            target = cls(cls.site_model.model_validate(SITES[name.value]), "bench", settings)
            rain_tree = copy_tree(work / "tree", work / f"{name.value}-rain")
            start = time.monotonic()
            target.adapt(rain_tree)
            target.pack(rain_tree, work / f"{name.value}-rain-out")
            rain_s = time.monotonic() - start
            plain_tree = copy_tree(work / "tree", work / f"{name.value}-plain")
            out = work / f"{name.value}-plain-out"
            out.mkdir()
            start = time.monotonic()
            plain(name.value, plain_tree, out)
            plain_s = time.monotonic() - start
            print(f"{name.value:<12}{rain_s:>19.1f}{plain_s:>15.1f}{rain_s / plain_s:>8.2f}")
            leftovers = [rain_tree, plain_tree, out, work / f"{name.value}-rain-out"]
            subprocess.run(["rm", "-rf", *map(str, leftovers)], check=True)


if __name__ == "__main__":
    main()
