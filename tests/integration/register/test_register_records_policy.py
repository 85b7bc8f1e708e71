"""The register stage under the records policy (issue #9, defect 6): a reader who registers someone
else's image on their own site leaves the owner's verdict, registrations and remote copies alone."""

from __future__ import annotations

import pytest
from support.repository import upload

from rain.errors import InvalidInput, VetFailed
from rain.register.pipeline import deregister, register
from rain.repository.models import Status

pytestmark = pytest.mark.integration


def test_a_readers_deregister_takes_only_their_own_copy(sites, repos, clean_tarball):
    alice, bob = repos("alice"), repos("bob")
    image = upload(alice, clean_tarball)
    alice.share(image.id, ["bob"])
    alices = register(alice, sites.settings, image.id, "openstack")
    bobs = register(bob, sites.settings, image.id, "openstack")
    assert {(r.by, r.remote_id) for r in alice.show(image.id).registrations} == \
        {("alice", alices.remote_id), ("bob", bobs.remote_id)}
    assert [r.user for r in alice.show(image.id).reader_vetting] == ["bob"]  # bob's run is kept as his

    deregister(bob, sites.settings, image.id, "openstack")
    assert not sites["openstack"].holds(bobs.remote_id)
    assert sites["openstack"].holds(alices.remote_id)
    assert [(r.by, r.remote_id) for r in alice.show(image.id).registrations] == [("alice", alices.remote_id)]
    with pytest.raises(InvalidInput) as e:
        deregister(bob, sites.settings, image.id, "openstack")
    assert "by you" in e.value.message
    assert sites["openstack"].holds(alices.remote_id)


def test_a_readers_failed_vetting_does_not_quarantine_the_owners_image(sites, repos, bad_tarball):
    alice, bob = repos("alice"), repos("bob")
    image = upload(alice, bad_tarball, "bad")
    alice.share(image.id, ["bob"])
    with pytest.raises(VetFailed):
        register(bob, sites.settings, image.id, "openstack")
    shown = alice.show(image.id)
    assert (shown.status, shown.quarantined, shown.vetting) == (Status.AVAILABLE, [], {})
    [report] = shown.reader_vetting
    assert (report.user, report.target, report.verdict) == ("bob", "openstack", "fail")
    with pytest.raises(VetFailed):
        register(alice, sites.settings, image.id, "openstack")  # the owner's own run does quarantine it
    assert alice.show(image.id).quarantined == ["openstack"]
