"""Who may write what on an image record (issue #9, defect 6), over the Store and the HTTP Client.

The matrix: owner, reader via a share, reader of a public image, stranger, admin
× set vetting fail/pass, accept a rule, add/remove registrations, remove the image.
Each row gets a fresh image of alice's, so one row cannot hide another's effect; the
rows of one action run in one test (a service start per test is the slow part).
"""

from __future__ import annotations

from typing import Any

import pytest
from support.repository import payload, put, refused

from rain.errors import Conflict, Forbidden, InvalidInput, NotFound
from rain.repository.models import Image, Status

pytestmark = pytest.mark.integration
ROLES = ["owner", "share reader", "public reader", "stranger", "admin"]
FAIL = {"verdict": "fail", "findings": ["sshd-root-login"]}
PASS = {"verdict": "pass", "findings": []}


class World:
    """alice owns every image; bob reads hers through a share, carol because it is public; dave reads nothing."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.alice, self.bob, self.carol, self.dave = backend.users("alice", "bob", "carol", "dave")
        self.admin = backend.admin
        self.by_role = {"owner": self.alice, "share reader": self.bob, "public reader": self.carol,
                        "stranger": self.dave, "admin": self.admin}
        self.names = {"owner": "alice", "share reader": "bob", "public reader": "carol", "stranger": "dave",
                      "admin": "admin"}

    def image(self, role: str) -> tuple[Any, Image]:
        """The actor for `role` and a fresh image of alice's that this actor reads (or, for dave, does not)."""
        image = put(self.alice, payload(100), f"img-{role.replace(' ', '-')}", public=(role == "public reader"))
        if role == "share reader":
            self.alice.share(image.id, ["bob"])
        return self.by_role[role], image

    def record(self, image: Image) -> Image:
        return self.admin.show(image.id)


@pytest.fixture
def world(backend: Any) -> World:
    return World(backend)


def each_role(check: Any) -> None:
    """check(role) for every role, failing with the role named."""
    for role in ROLES:
        try:
            check(role)
        except AssertionError as e:
            raise AssertionError(f"as {role}: {e}") from e


class TestVetting:
    def test_only_the_owners_or_an_admins_failing_run_quarantines(self, world):
        def check(role: str) -> None:
            actor, image = world.image(role)
            if role == "stranger":
                refused(NotFound, lambda: actor.set_vetting(image.id, "openstack", FAIL))
            else:
                actor.set_vetting(image.id, "openstack", FAIL)
            after = world.record(image)
            if role in ("owner", "admin"):
                assert (after.status, after.quarantined) == (Status.QUARANTINED, ["openstack"])
                assert after.vetting["openstack"]["by"] == world.names[role]
                assert after.reader_vetting == []
                return
            # someone else's failing run leaves alice's image available...
            assert (after.status, after.quarantined, after.vetting) == (Status.AVAILABLE, [], {})
            if role == "stranger":
                assert after.reader_vetting == []
                return
            [theirs] = after.reader_vetting  # ... and is kept, as theirs
            assert (theirs.user, theirs.target, theirs.verdict) == (world.names[role], "openstack", "fail")
            assert theirs.report["findings"] == ["sshd-root-login"]

        each_role(check)

    def test_only_the_owners_or_an_admins_passing_run_lifts_a_quarantine(self, world):
        def check(role: str) -> None:
            actor, image = world.image(role)
            world.alice.set_vetting(image.id, "openstack", FAIL)
            if role == "stranger":
                refused(NotFound, lambda: actor.set_vetting(image.id, "openstack", PASS))
            else:
                actor.set_vetting(image.id, "openstack", PASS)
            after = world.record(image)
            if role in ("owner", "admin"):
                assert (after.status, after.quarantined) == (Status.AVAILABLE, [])
                assert after.vetting["openstack"]["verdict"] == "pass"
            else:  # a forged pass neither lifts the quarantine nor replaces alice's report
                assert (after.status, after.quarantined) == (Status.QUARANTINED, ["openstack"])
                assert after.vetting["openstack"] == {**FAIL, "by": "alice"}

        each_role(check)
        _, image = world.image("public reader")  # a reader's rerun replaces only their own report
        world.alice.share(image.id, ["bob"])
        world.carol.set_vetting(image.id, "openstack", FAIL)
        world.bob.set_vetting(image.id, "openstack", FAIL)
        world.carol.set_vetting(image.id, "openstack", PASS)
        reports = {(r.user, r.target): r.verdict for r in world.record(image).reader_vetting}
        assert reports == {("carol", "openstack"): "pass", ("bob", "openstack"): "fail"}

    def test_only_an_admin_accepts_a_rule(self, world):
        def check(role: str) -> None:
            actor, image = world.image(role)
            if role == "admin":
                accepted = actor.accept_rule(image.id, "openstack", "sshd-root-login").accepted_rules
                assert accepted == {"openstack": ["sshd-root-login"]}
                return
            message = refused(Forbidden, lambda: actor.accept_rule(image.id, "openstack", "sshd-root-login"))
            assert "administrators" in message
            assert world.record(image).accepted_rules == {}

        each_role(check)


class TestRegistrations:
    def test_whoever_reads_an_image_records_and_removes_only_their_own_registrations(self, world):
        def own(role: str) -> None:
            actor, image = world.image(role)
            if role == "stranger":
                refused(NotFound, lambda: actor.add_registration(image.id, "openstack", "mine", "r-1"))
                refused(NotFound, lambda: actor.remove_registration(image.id, "openstack"))
                assert world.record(image).registrations == []
                return
            [reg] = actor.add_registration(image.id, "openstack", "mine", "r-1").registrations
            assert (reg.by, reg.target, reg.remote_id) == (world.names[role], "openstack", "r-1")
            assert actor.remove_registration(image.id, "openstack").registrations == []
            assert world.record(image).registrations == []

        def someone_elses(role: str) -> None:
            actor, image = world.image(role)
            other = world.bob if role in ("owner", "admin") else world.alice  # never the actor
            if other is world.bob:
                world.alice.share(image.id, ["bob"])
            other.add_registration(image.id, "openstack", "theirs", "r-2")
            if role == "admin":
                assert actor.remove_registration(image.id, "openstack").registrations == []
                return
            if role == "stranger":
                refused(NotFound, lambda: actor.remove_registration(image.id, "openstack"))
            else:
                owner = "bob" if other is world.bob else "alice"
                assert f"{owner}'s" in refused(Forbidden, lambda: actor.remove_registration(image.id, "openstack"))
            assert [r.remote_id for r in world.record(image).registrations] == ["r-2"]

        each_role(own)
        each_role(someone_elses)
        _, image = world.image("share reader")  # an admin's own deregistration leaves bob's record alone
        world.bob.add_registration(image.id, "openstack", "default", "bobs")
        world.admin.add_registration(image.id, "openstack", "default", "admins")
        left = world.admin.remove_registration(image.id, "openstack", "default").registrations
        assert [(r.by, r.remote_id) for r in left] == [("bob", "bobs")]
        _, image = world.image("owner")
        assert "no registration" in refused(NotFound, lambda: world.alice.remove_registration(image.id, "ec2"))


class TestReproductions:
    def test_whoever_reads_an_image_records_a_rebuild_as_theirs_and_a_bad_one_is_refused(self, world):
        found = {"identical": False, "format": "tar.zst", "builder": "local", "sha256": "ab" * 32,
                 "differences": ["/etc/motd: content (8 → 9 bytes)"], "note": ""}

        def check(role: str) -> None:
            actor, image = world.image(role)
            if role == "stranger":
                refused(NotFound, lambda: actor.add_reproduction(image.id, found))
                assert world.record(image).reproductions == []
                return
            [rep] = actor.add_reproduction(image.id, found).reproductions
            assert (rep.by, rep.identical, rep.differences) == (world.names[role], False, found["differences"])
            record = world.record(image)
            assert record.reproductions == [rep] and record.status == Status.AVAILABLE  # nothing else changes

        each_role(check)
        actor, image = world.image("share reader")
        for bad, word in (({**found, "sha256": "x"}, "sha256"), ({**found, "differences": ["x"] * 21}, "differences"),
                          ({**found, "by": "admin"}, "by"), ({**found, "note": "a\x1b[2Jb"}, "note")):
            message = refused(InvalidInput, lambda bad=bad: actor.add_reproduction(image.id, bad))
            assert word in message and "\n" not in message
        assert world.record(image).reproductions == []


class TestRemove:
    def test_only_the_owner_or_an_admin_removes_and_any_registration_blocks_unless_forced(self, world):
        def check(role: str) -> None:
            actor, image = world.image(role)
            if role in ("owner", "admin"):
                actor.remove(image.id)
                refused(NotFound, lambda: world.admin.show(image.id))
                return
            refused(NotFound if role == "stranger" else Forbidden, lambda: actor.remove(image.id))
            assert world.record(image).status == Status.AVAILABLE

        each_role(check)
        _, image = world.image("public reader")
        world.carol.add_registration(image.id, "openstack", "carols-project", "r-3")
        assert "openstack (by carol)" in refused(Conflict, lambda: world.alice.remove(image.id))
        world.alice.remove(image.id, force=True)
        refused(NotFound, lambda: world.admin.show(image.id))


class TestHostileNames:
    def test_a_target_or_report_key_that_would_be_a_field_path_is_refused_and_nothing_written(self, world):
        """A target name becomes a key of the record (vetting.<target>): only plain names pass."""
        admin = world.admin
        _, image = world.image("owner")
        for target in ("a.b", "$where", "Open", "x" * 40):
            for call in (lambda t=target: admin.set_vetting(image.id, t, FAIL),
                         lambda t=target: admin.accept_rule(image.id, t, "sshd-root-login"),
                         lambda t=target: admin.add_registration(image.id, t, "s", "r"),
                         lambda t=target: admin.remove_registration(image.id, t)):
                assert "target" in refused(InvalidInput, call), target
        refused(InvalidInput, lambda: world.alice.set_vetting(image.id, "openstack", {"verdict": "fail", "x.y": 1}))
        raw = world.backend.db.images.find_one({"_id": image.id})
        assert (raw["vetting"], raw["accepted_rules"], raw["registrations"], raw["quarantined"]) == ({}, {}, [], [])
        assert raw["status"] == "available" and "$where" not in raw
