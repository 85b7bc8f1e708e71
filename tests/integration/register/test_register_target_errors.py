"""Bad target settings and failing target APIs: one clear error, and nothing left half-published."""

from __future__ import annotations

import os
import socket

import pytest
from support.repository import upload
from support.simulators.faults import FaultProxy
from support.sites import TARGETS

from rain.errors import ConfigError, InvalidInput, QuotaExceeded, TargetError, Unauthorized, Unreachable
from rain.progress import Reporter
from rain.register.pipeline import register

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once we return: nothing listens there


def test_unknown_target_lists_the_valid_ones(sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    with pytest.raises(InvalidInput) as e:
        register(alice, sites.settings, image.id, "vmware")
    assert "vmware" in e.value.message and all(t in e.value.hint for t in TARGETS)


def test_unknown_site_lists_the_sites(sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    with pytest.raises(ConfigError) as e:
        register(alice, sites.settings, image.id, "ec2", site="moon")
    assert "moon" in e.value.message and "default" in e.value.hint


def test_unknown_key_in_the_targets_file_is_named(sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    sites.rewrite("openstack", pasword="oops")
    with pytest.raises(ConfigError) as e:
        register(alice, sites.settings, image.id, "openstack")
    assert "pasword" in e.value.message and "password_env" in e.value.hint


@pytest.mark.parametrize("target, key", [("opennebula", "endpoint"), ("openstack", "auth_url"),
                                         ("ec2", "endpoint_url")])
def test_unreachable_endpoint(target, key, sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    port = closed_port()
    sites.rewrite(target, **{key: f"http://127.0.0.1:{port}" + ("/RPC2" if target == "opennebula" else "/v3")
                             if target != "ec2" else f"http://127.0.0.1:{port}"})
    with pytest.raises(Unreachable) as e:
        register(alice, sites.settings, image.id, target)
    assert str(port) in e.value.message or "127.0.0.1" in e.value.message or "reach" in e.value.message
    assert alice.show(image.id).registrations == []


def test_hpc_provisioning_directory_not_writable(sites, repos, clean_tarball, tmp_path):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the provisioning directory should be")
    sites.rewrite("hpc", provision_dir=str(blocker))
    with pytest.raises(TargetError) as e:
        register(alice, sites.settings, image.id, "hpc")
    assert str(blocker) in e.value.message
    assert alice.show(image.id).registrations == []


def test_wrong_password_is_unauthorized(sites, repos, clean_tarball, monkeypatch):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    monkeypatch.setenv("RAIN_TEST_OS_PASSWORD", "wrong")
    with pytest.raises(Unauthorized):
        register(alice, sites.settings, image.id, "openstack")
    monkeypatch.setenv("RAIN_TEST_ONE_PASSWORD", "wrong")
    with pytest.raises(Unauthorized):
        register(alice, sites.settings, image.id, "opennebula")


def test_a_region_without_glance_in_the_catalog_names_the_region_and_publishes_nothing(sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    sites.rewrite("openstack", region="Atlantis")
    steps: list[str] = []
    with pytest.raises(ConfigError) as e:
        register(alice, sites.settings, image.id, "openstack",
                 reporter=Reporter(lambda event, step, _: steps.append(step)))
    assert "no public image endpoint in region Atlantis (regions with one: RegionOne)" in e.value.message
    assert "region" in (e.value.hint or "")
    assert steps == [], "found out before the image was fetched, vetted, adapted and packed"
    assert sites["openstack"].published() == 0 and alice.show(image.id).registrations == []


def test_opennebula_image_in_error_is_deleted(sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    one = sites["opennebula"].backend
    one.fail_fetch = True
    with pytest.raises(TargetError, match="ERROR"):
        register(alice, sites.settings, image.id, "opennebula")
    assert one.images == {} and len(one.deleted) == 1
    assert os.listdir(sites.config["opennebula"]["default"]["staging_dir"]) == []


def test_glance_upload_failure_deletes_the_queued_image(sites, repos, clean_tarball, openstack_cloud):
    """The real Glance behind a proxy (the image endpoint of region BrokenStore) that answers the upload (a
    plain one or an import's stage) with Glance's 500: Rain deletes the image it created, which the real Glance
    then no longer has."""
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    proxy = FaultProxy(openstack_cloud.glance, "PUT", r"^/v2/images/[^/]+/(file|stage)$", error=None, status=500,
                       message="The server has either erred or is incapable of performing the requested operation.")
    try:
        with openstack_cloud.region("BrokenStore", proxy.url):
            sites.rewrite("openstack", region="BrokenStore")
            with pytest.raises(TargetError, match="HTTP 500"):
                register(alice, sites.settings, image.id, "openstack")
    finally:
        proxy.stop()
    [created] = [path.split("/")[3] for method, path, status in proxy.seen if (method, status) == ("PUT", 500)]
    assert ("DELETE", f"/v2/images/{created}", 204) in proxy.seen, proxy.seen
    assert openstack_cloud.image(created).status_code == 404
    assert sites["openstack"].backend.images == {} and alice.show(image.id).registrations == []


def test_glance_busy_on_the_first_delete_still_leaves_nothing(sites, repos, clean_tarball, openstack_cloud):
    """The published image does not fit bob's quota, so Rain deletes it; Glance answers that first DELETE with
    the 500 its database gives when briefly locked. Rain tries again and the real Glance no longer has it."""
    admin, bob = repos("admin"), repos("bob")
    image = upload(bob, clean_tarball)
    admin.set_quota("bob", image.size + 1024)
    proxy = FaultProxy(openstack_cloud.glance, "DELETE", r"^/v2/images/[^/]+$", error=None, status=500, times=1,
                       message="The server has either erred or is incapable of performing the requested operation.")
    try:
        with openstack_cloud.region("BusyDatabase", proxy.url):
            sites.rewrite("openstack", region="BusyDatabase")
            with pytest.raises(QuotaExceeded):
                register(bob, sites.settings, image.id, "openstack")
    finally:
        proxy.stop()
    deletes = [(path, status) for method, path, status in proxy.seen if method == "DELETE"]
    assert [status for _, status in deletes] == [500, 204], proxy.seen
    assert openstack_cloud.image(deletes[0][0].split("/")[3]).status_code == 404
    assert sites["openstack"].backend.images == {} and bob.show(image.id).registrations == []


def test_ebs_refusing_a_block_deletes_the_partial_snapshot(sites, repos, clean_tarball, moto_url):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    proxy = FaultProxy(moto_url, "PUT", r"/snapshots/[^/]+/blocks/\d+", after=3)
    try:
        sites.rewrite("ec2", endpoint_url=proxy.url)
        with pytest.raises(TargetError, match="ValidationException"):
            register(alice, sites.settings, image.id, "ec2")
    finally:
        proxy.stop()
    assert sites["ec2"].published() == 0
    assert alice.show(image.id).registrations == []


def test_failed_boot_test_publishes_nothing_and_keeps_the_console_log(sites, repos, clean_tarball):
    """The fake image's 'kernel' is not bootable: QEMU gives up, the registration fails, nothing is published."""
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    with pytest.raises(TargetError) as e:
        register(alice, sites.settings, image.id, "hpc", boot_test=True, boot_timeout=60)
    assert "boot" in e.value.message and "console log" in e.value.hint
    assert sites["hpc"].published() == 0 and alice.show(image.id).registrations == []
