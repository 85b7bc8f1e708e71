"""One contract suite over all four targets: what `register` promises, whatever the infrastructure.

Sites: moto's real EC2/EBS server; the real Keystone and Glance (support/openstack_cloud.py);
the OpenNebula XML-RPC SIMULATOR (tests/support/simulators); hpc provisioning directories. Images are small
fake roots (tests/support/images.py); the real Debian image runs in e2e.
"""

from __future__ import annotations

import pytest
from support.repository import upload
from support.sites import TARGETS

from rain.errors import ConfigError, Forbidden, NotFound, QuotaExceeded, VetFailed
from rain.register.pipeline import deregister, register

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", TARGETS)
def test_registers_and_records_with_a_derived_image(target, sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    outcome = register(alice, sites.settings, image.id, target)
    assert sites[target].holds(outcome.remote_id)
    shown = alice.show(image.id)
    [reg] = shown.registrations
    assert (reg.target, reg.site, reg.remote_id) == (target, "default", outcome.remote_id)
    assert shown.vetting[target]["verdict"] == "pass" and target not in shown.quarantined
    derived = alice.show(outcome.derived_id)
    assert derived.parent == image.id and derived.owner == "alice"
    assert derived.format == {"hpc": "squashfs", "ec2": "raw"}.get(target, "qcow2")
    assert "emptied /etc/machine-id (each instance generates its own)" in outcome.changes


@pytest.mark.parametrize("target", TARGETS)
def test_bad_image_is_stopped_names_each_rule_and_is_quarantined(target, sites, repos, bad_tarball):
    alice = repos("alice")
    image = upload(alice, bad_tarball, "bad")
    with pytest.raises(VetFailed) as e:
        register(alice, sites.settings, image.id, target)
    for rule in ("archive-escape", "empty-password", "ssh-host-keys", "private-keys"):
        assert rule in e.value.message
    assert sites[target].published() == 0
    shown = alice.show(image.id)
    assert target in shown.quarantined and shown.registrations == []
    assert {f["rule"] for f in shown.vetting[target]["findings"]} >= {"archive-escape", "private-keys"}


@pytest.mark.parametrize("target", TARGETS)
def test_deregister_removes_it_from_the_site_and_the_record(target, sites, repos, clean_tarball):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    outcome = register(alice, sites.settings, image.id, target)
    deregister(alice, sites.settings, image.id, target)
    assert not sites[target].holds(outcome.remote_id)
    assert alice.show(image.id).registrations == []


@pytest.mark.parametrize("target", TARGETS)
def test_failure_after_publish_deletes_the_remote_image(target, sites, repos, clean_tarball):
    """The derived image does not fit bob's quota: the publish is undone, nothing is left on the site."""
    admin = repos("admin")
    bob = repos("bob")
    image = upload(bob, clean_tarball)
    admin.set_quota("bob", image.size + 1024)
    with pytest.raises(QuotaExceeded):
        register(bob, sites.settings, image.id, target)
    assert sites[target].published() == 0
    assert bob.show(image.id).registrations == []


@pytest.mark.parametrize("target", TARGETS)
def test_bob_cannot_register_alices_private_image_until_shared(target, sites, repos, clean_tarball):
    alice, bob = repos("alice"), repos("bob")
    image = upload(alice, clean_tarball)
    with pytest.raises((NotFound, Forbidden)):
        register(bob, sites.settings, image.id, target)
    assert sites[target].published() == 0
    alice.share(image.id, ["bob"])
    outcome = register(bob, sites.settings, image.id, target)
    assert sites[target].holds(outcome.remote_id)
    assert bob.show(outcome.derived_id).owner == "bob"


@pytest.mark.parametrize("target", TARGETS)
def test_missing_credentials_fail_before_anything_moves(target, sites, repos, clean_tarball, monkeypatch):
    alice = repos("alice")
    image = upload(alice, clean_tarball)
    if target == "hpc":
        sites.rewrite("hpc", provision_dir=None)  # hpc has no credentials: its required directory is missing
    else:
        var = {"opennebula": "RAIN_TEST_ONE_PASSWORD", "openstack": "RAIN_TEST_OS_PASSWORD",
               "ec2": "RAIN_TEST_AWS_SECRET"}[target]
        monkeypatch.delenv(var)
    with pytest.raises(ConfigError) as e:
        register(alice, sites.settings, image.id, target)
    assert e.value.hint and "\n" not in e.value.message
    assert sites[target].published() == 0
    assert alice.show(image.id).vetting == {}  # refused before the image was even fetched


def test_a_derived_qcow2_can_itself_be_vetted_and_registered(sites, repos, clean_tarball):
    """raw/qcow2 input: the OpenStack copy (qcow2, read back through a read-only loop mount) goes to EC2."""
    from rain.register.pipeline import vet_image

    alice = repos("alice")
    image = upload(alice, clean_tarball)
    first = register(alice, sites.settings, image.id, "openstack")
    report = vet_image(alice, first.derived_id, "ec2", sites.settings)
    assert report.verdict == "pass"
    second = register(alice, sites.settings, first.derived_id, "ec2")
    assert sites["ec2"].holds(second.remote_id)
    assert alice.show(second.derived_id).parent == first.derived_id


def test_registration_through_the_repository_service(service, sites, repos, clean_tarball, bad_tarball):
    """The same pipeline over the HTTP client (`fg-image serve`): records, quarantine and ACLs hold there too."""
    from rain.repository.client import Client

    admin = repos("admin")
    repos("alice")
    repos("bob")
    alice = Client(service.url, admin.issue_token("alice"), timeout=60)
    bob = Client(service.url, admin.issue_token("bob"), timeout=60)
    image = upload(alice, clean_tarball)
    with pytest.raises((NotFound, Forbidden)):
        register(bob, sites.settings, image.id, "hpc")
    outcome = register(alice, sites.settings, image.id, "hpc")
    assert sites["hpc"].holds(outcome.remote_id)
    assert alice.show(outcome.derived_id).parent == image.id
    bad = upload(alice, bad_tarball, "bad")
    with pytest.raises(VetFailed):
        register(alice, sites.settings, bad.id, "hpc")
    assert alice.show(bad.id).quarantined == ["hpc"]
