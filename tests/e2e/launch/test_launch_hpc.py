"""`fg-image launch --target hpc`: two diskless QEMU nodes netboot the kernel recipe's image as the hpc site
publishes it (PXE from QEMU's TFTP, then iPXE chaining the published boot.ipxe, the kernel, the initrd and
the squashfs over HTTP from the site's http_url, served by Rain on 127.0.0.1), and run a job.

A minute or two under TCG: the image is registered first (squashfs and initrd), then both nodes boot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.builders import qemu_pids
from support.cli import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = """#!/bin/sh
set -e
mkdir -p out
cat /proc/cmdline > out/cmdline
ls /sys/block > out/blocks
findmnt -no FSTYPE / > out/root
second=$(sed -n 2p "$RAIN_MACHINES")
ssh -o BatchMode=yes "$second" 'hostname; findmnt -no FSTYPE /' > out/second
"""


def test_two_nodes_netboot_the_published_image_over_http_and_run_a_job(fg, sites, debian_tarball, tmp_path):
    port = free_port()
    sites.rewrite("hpc", nodes="qemu", http_url=f"http://10.0.2.2:{port}/rain")
    env = {"RAIN_TARGETS_FILE": str(sites.path), "RAIN_LAUNCH_LIFETIME": "1800",
           **{k: os.environ[k] for k in ("RAIN_TEST_OS_PASSWORD", "RAIN_TEST_ONE_PASSWORD")}}
    up = fg("upload", str(debian_tarball), "--name", "kernel", "--os", "debian", "--release", "12", "--arch",
            "x86_64", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.strip()
    job = tmp_path / "job.sh"
    job.write_text(JOB)
    done = fg("launch", image_id, "--target", "hpc", "--count", "2", "--run", str(job), "--download", "out",
              "--boot-timeout", "600", env=env, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert "registering it first" in done.stderr

    out = tmp_path / "out"
    provision = Path(sites.config["hpc"]["default"]["provision_dir"])
    [slug] = [p.name for p in provision.iterdir() if p.name.startswith("rain-")]
    # the root came over HTTP from the site's URL (the published boot.ipxe's arguments, and the launch's seed)
    cmdline = (out / "cmdline").read_text()
    assert f"rain.root=http://10.0.2.2:{port}/rain/{slug}/rootfs.squashfs" in cmdline
    assert "rain.seed=http://10.0.2.2:" in cmdline
    # no disk at all: nothing but the loop device of the fetched squashfs; / is its overlay
    assert not [b for b in (out / "blocks").read_text().split() if not b.startswith(("loop", "ram", "zram"))]
    assert (out / "root").read_text().strip() == "overlay"
    # the head reached the second node by its name, with its pinned host key, on the private network
    assert (out / "second").read_text().split() == ["node2", "overlay"]

    assert not qemu_pids(f"tftp={'/tmp/rain-launch-'}"), "no node is left running"
    assert fg("instances", "list", env=env).stdout.strip() == "no machines launched"
