"""The real thing: the image `fg-image generate recipes/debian-bookworm-kernel.yaml` builds, registered on
bare metal by `fg-image`, the result booted under QEMU (TCG) to the marker the adapter's unit prints at
multi-user.target, then launched on two diskless nodes that netboot what was published; and vetted under
each policy.

Sites as in the integration suite (hpc provisioning directories), the hpc site with local QEMU nodes.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from support.builders import qemu_pids
from support.cli import free_port
from support.service import start_service

from rain.digests import sha256_of
from rain.register.targets.hpc import MARKER
from rain.repository.connect import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HPC_FILES = {"vmlinuz", "initrd.img", "rootfs.squashfs", "boot.ipxe", "pxelinux.entry", "xcat-osimage.stanza",
             "warewulf-image.yaml"}


def env_for(sites) -> dict[str, str]:
    keep = ("RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_OS_PASSWORD", "RAIN_TEST_AWS_KEY", "RAIN_TEST_AWS_SECRET")
    return {"RAIN_TARGETS_FILE": str(sites.path), **{k: os.environ[k] for k in keep}}


def upload(fg, path, env: dict[str, str], name: str = "debian-bookworm-kernel") -> str:
    """`fg-image upload` of a generated image as Debian 12 on x86_64, with the manifest its build wrote
    beside it as its provenance (as `generate` stores it); returns the new image id."""
    up = fg("upload", str(path), "--name", name, "--os", "debian", "--release", "12", "--arch", "x86_64",
            "--manifest", str(path.with_name("manifest.json")), env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    return up.stdout.strip()


JOB = """#!/bin/sh
set -e
mkdir -p out
cat /proc/cmdline > out/cmdline
ls /sys/block > out/blocks
findmnt -no FSTYPE / > out/root
second=$(sed -n 2p "$RAIN_MACHINES")
ssh -o BatchMode=yes "$second" 'hostname; findmnt -no FSTYPE /' > out/second
"""


def test_debian_image_registers_boots_and_netboots_two_nodes_on_bare_metal(fg, sites, debian_tarball, tmp_path,
                                                                          rain_env, settings, page):
    """The kernel image on hpc. Its cloud registrations are in test_register_contextualize.py (openstack,
    which installs cloud-init into the copy) and test_register_cloud_e2e.py (the cloud recipe on the others).
    Then `fg-image launch --target hpc`: two nodes boot by PXE from QEMU's TFTP, then iPXE chains the
    published boot.ipxe and fetches the kernel, the initrd and the squashfs over HTTP from the site's
    http_url (served by Rain on 127.0.0.1), and a job runs on them."""
    port = free_port()
    sites.rewrite("hpc", nodes="qemu", http_url=f"http://10.0.2.2:{port}/rain")
    env = env_for(sites)
    image_id = upload(fg, debian_tarball, env)
    result = fg("register", image_id, "--target", "hpc", "--json", "--boot-test", env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert sites["hpc"].holds(outcome["remote_id"])

    # the boot test reached the marker printed by the image's own systemd; every boot file is published
    log = tmp_path / "rain-data" / "boot-logs" / f"{image_id}-hpc.log"
    assert MARKER in log.read_text(errors="replace")
    published = sites.config["hpc"]["default"]["provision_dir"] + "/" + outcome["remote_id"]
    assert HPC_FILES <= set(os.listdir(published))
    assert "boot-test" in outcome["timings"]

    # the repository shows the registration, and the derived image with its parent
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert [r["target"] for r in shown["registrations"]] == ["hpc"]
    assert all(v["verdict"] == "pass" for v in shown["vetting"].values())
    derived = json.loads(fg("show", outcome["derived_image"], "--json", env=env).stdout)
    assert derived["parent"] == image_id and derived["format"] == "squashfs"
    assert [d["id"] for d in shown["derived"]] == [outcome["derived_image"]]
    text = fg("show", image_id, env=env).stdout
    assert re.search(rf"^derived\s+{outcome['derived_image']} ", text, re.M), text

    # the registration, netbooted: two diskless nodes run a job
    (tmp_path / "job.sh").write_text(JOB)
    done = fg("launch", image_id, "--target", "hpc", "--count", "2", "--run", "job.sh", "--download", "out",
              "--boot-timeout", "600", env={**env, "RAIN_LAUNCH_LIFETIME": "1800"}, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert "registering it first" not in done.stderr, "the launch used the registration"
    out, slug = tmp_path / "out", outcome["remote_id"]
    # the root came over HTTP from the site's URL (the published boot.ipxe's arguments, and the launch's seed)
    cmdline = (out / "cmdline").read_text()
    assert f"rain.root=http://10.0.2.2:{port}/rain/{slug}/rootfs.squashfs" in cmdline
    assert "rain.seed=http://10.0.2.2:" in cmdline
    # no disk at all: nothing but the loop device of the fetched squashfs; / is its overlay
    assert not [b for b in (out / "blocks").read_text().split() if not b.startswith(("loop", "ram", "zram"))]
    assert (out / "root").read_text().strip() == "overlay"
    # the head reached the second node by its name, with its pinned host key, on the private network
    assert (out / "second").read_text().split() == ["node2", "overlay"]
    assert not qemu_pids("tftp=/tmp/rain-launch-"), "no node is left running"
    assert fg("instances", "list", env=env).stdout.strip() == "no machines launched"

    # the web catalog's page of this generated, vetted and registered image (issue #15, acceptance 2)
    service = start_service({**rain_env, **env}, tmp_path / "serve.log")
    try:
        image_page_shows_the_build(page, service.url, open_store(settings, "admin").issue_token("admin"),
                                   shown, outcome, tmp_path)
    finally:
        service.stop()


def image_page_shows_the_build(page, url: str, token: str, shown: dict, outcome: dict, tmp_path) -> None:
    """Package list, vetting report, registration and lineage on the image's page; its download link gives
    the stored bytes (sha256)."""
    from playwright.sync_api import expect
    from support.browser import screenshot

    page.goto(url + "/signin")
    page.get_by_label("Repository token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{url}/images/{shown['id']}")
    packages = shown["provenance"]["packages"]
    expect(page.locator("#packages tbody tr")).to_have_count(len(packages))
    expect(page.locator("#provenance")).to_contain_text(shown["provenance"]["recipe_hash"])
    page.get_by_label("filter packages").fill("openssh-server")  # the list filters as you type
    version = next(p["version"] for p in packages if p["name"] == "openssh-server")
    expect(page.locator("#packages tbody tr:visible")).to_have_count(1)
    expect(page.locator("#packages tbody tr:visible")).to_contain_text(version)
    for target in shown["vetting"]:
        expect(page.locator("#vetting")).to_contain_text(f"{target}: pass")
    expect(page.locator("#registrations")).to_contain_text(outcome["remote_id"])
    derived = page.locator(f'#lineage svg a[href="/images/{outcome["derived_image"]}"]')
    expect(derived).to_have_count(1)  # the registration's squashfs, drawn below it
    screenshot(page, "image")
    with page.expect_download() as info:
        page.locator("#download").click()
    saved = tmp_path / "from-the-page.tar.zst"
    info.value.save_as(saved)
    assert sha256_of(saved) == shown["sha256"], "the link gives the stored bytes"
    saved.unlink()
    derived.click()  # the lineage links to the derived image, whose parent is this one
    expect(page).to_have_url(f"{url}/images/{outcome['derived_image']}")
    expect(page.locator(f'#lineage svg a[href="/images/{shown["id"]}"]')).to_have_count(1)
    assert page.dialogs == [] and page.console_errors == []


def test_vet_the_debian_image_under_each_policy(fg, debian_tarball):
    for target in ("hpc", "ec2"):
        result = fg("vet", str(debian_tarball), "--target", target, "--json", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        # a generated image passes even bare metal's strict policy as built (no baked host keys, ...)
        assert not [f["rule"] for f in report["findings"] if f["blocking"]], result.stdout
        assert "kernel-missing" in report["rules_run"]
        assert ("kernel-nvme-ena" in report["rules_run"]) == (target == "ec2")
