"""The Repository contract: every test runs over the pymongo Store and over the HTTP Client
talking to a real `fg-image serve`, and must pass the same way on both."""

from __future__ import annotations

import io

import pytest
from support.repository import eventually, payload, put, sha

from rain.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    RainError,
    Unauthorized,
)
from rain.repository.models import (
    ImageChanges,
    ImageMeta,
    ImageQuery,
    Role,
    Status,
    UserStatus,
    Visibility,
)

pytestmark = pytest.mark.integration
MiB = 1 << 20


def one_line(e: pytest.ExceptionInfo[RainError]) -> str:
    message = e.value.message
    assert message and "\n" not in message
    return message


class TestImages:
    def test_put_then_get_returns_the_same_bytes_and_sha256(self, backend):
        data = payload(3 * MiB + 123)
        image = put(backend.admin, data, "rocky", os={"family": "rocky", "release": "9", "arch": "x86_64"},
                    format="qcow2", tags=["base"], description="a test image")
        assert image.status == Status.AVAILABLE
        assert (image.size, image.sha256, image.owner) == (len(data), sha(data), "admin")
        assert (image.name, image.format, image.tags, image.os.release) == ("rocky", "qcow2", ["base"], "9")

        out = io.BytesIO()
        got = backend.admin.get(image.id, out)
        assert out.getvalue() == data
        assert got.sha256 == sha(data)

        tail = io.BytesIO()
        backend.admin.get(image.id, tail, offset=MiB)
        assert tail.getvalue() == data[MiB:]

    def test_a_wrong_checksum_is_refused_and_leaves_nothing_behind(self, backend):
        data = payload(2 * MiB)
        with pytest.raises(IntegrityError) as e:
            backend.admin.put(io.BytesIO(data), ImageMeta(name="bad"), len(data), sha256="0" * 64)
        assert "checksum" in one_line(e)
        assert backend.admin.list() == []
        assert backend.used_bytes("admin") == 0
        assert (backend.gridfs_files(), backend.gridfs_chunks()) == (0, 0)
        assert backend.db.images.count_documents({}) == 0

    @pytest.mark.parametrize("source", ["shorter", "longer"])
    def test_a_source_unlike_its_declared_size_is_refused_and_leaves_nothing(self, backend, source):
        data = payload(2 * MiB)
        declared = len(data) + MiB if source == "shorter" else len(data) - MiB
        with pytest.raises(IntegrityError) as e:
            backend.admin.put(io.BytesIO(data), ImageMeta(name="sized"), declared)
        assert "bytes" in one_line(e)
        eventually(lambda: backend.db.images.count_documents({}) == 0 and backend.gridfs_chunks() == 0)
        assert backend.admin.list() == [] and backend.used_bytes("admin") == 0

    def test_an_empty_image_round_trips(self, backend):
        image = backend.admin.put(io.BytesIO(b""), ImageMeta(name="empty"), 0)
        assert (image.size, image.sha256) == (0, sha(b""))
        out = io.BytesIO()
        assert backend.admin.get(image.id, out).size == 0 and out.getvalue() == b""

    def test_an_image_whose_bytes_are_gone_fails_its_download_as_an_integrity_error(self, backend):
        image = put(backend.admin, payload(2 * MiB), "damaged")
        backend.db["fs.files"].delete_many({})  # what a damaged or hand-edited database looks like
        backend.db["fs.chunks"].delete_many({})
        with pytest.raises(IntegrityError) as e:
            backend.admin.get(image.id, io.BytesIO())
        assert "missing" in one_line(e)
        assert backend.admin.show(image.id).access_count == 0

    def test_show_gives_the_full_record(self, backend):
        data = payload(1000)
        image = put(backend.admin, data, "deb", os={"family": "debian", "release": "12", "arch": "amd64"},
                    tags=["a", "b"])
        shown = backend.admin.show(image.id)
        assert shown.id == image.id
        assert (shown.name, shown.size, shown.sha256) == ("deb", 1000, sha(data))
        assert (shown.os.family, shown.os.release, shown.os.arch) == ("debian", "12", "amd64")
        assert shown.visibility == Visibility.PRIVATE and shown.tags == ["a", "b"]
        assert shown.access_count == 0 and shown.last_access is None

    def test_list_filters_on_every_field(self, backend):
        alice, bob = backend.users("alice", "bob")
        deb = put(alice, payload(100), "deb12", os={"family": "debian", "release": "12", "arch": "amd64"},
                  format="raw", tags=["hpc"], public=True)
        deb_arm = put(alice, payload(100), "deb12-arm", os={"family": "debian", "release": "12", "arch": "arm64"},
                      format="qcow2", public=True)
        rocky = put(bob, payload(100), "rocky9", os={"family": "rocky", "release": "9", "arch": "amd64"},
                    format="qcow2", tags=["hpc", "gpu"], public=True)
        backend.admin.set_vetting(rocky.id, "opennebula", {"verdict": "fail"})

        def ids(**q) -> set[str]:
            return {i.id for i in backend.admin.list(ImageQuery(**q))}

        assert ids() == {deb.id, deb_arm.id, rocky.id}
        assert ids(name="deb12") == {deb.id}
        assert ids(os_family="debian") == {deb.id, deb_arm.id}
        assert ids(release="9") == {rocky.id}
        assert ids(arch="amd64") == {deb.id, rocky.id}
        assert ids(format="qcow2") == {deb_arm.id, rocky.id}
        assert ids(tag="hpc") == {deb.id, rocky.id}
        assert ids(tag="gpu", os_family="rocky") == {rocky.id}
        assert ids(owner="alice") == {deb.id, deb_arm.id}
        assert ids(status=Status.QUARANTINED) == {rocky.id}
        assert ids(status=Status.AVAILABLE) == {deb.id, deb_arm.id}
        assert ids(name="nothing-like-this") == set()

    def test_a_listing_gives_summaries_and_show_the_whole_record(self, backend):
        """A built image's provenance (its package list) and its vetting reports are tens of kilobytes:
        a page of 100 such records was megabytes, and twice as slow on the embedded server."""
        packages = [{"name": f"package-{i}", "version": f"1.{i}-1"} for i in range(150)]
        for sort in ("-created", "name"):  # read from the slices of `created`, and by _id
            image = put(backend.admin, payload(100 + len(sort)), f"built{sort}", provenance={"packages": packages})
            backend.admin.set_vetting(image.id, "openstack", {"verdict": "pass", "findings": [{"rule": "x"}]})
            listed = [i for i in backend.admin.list(ImageQuery(sort=sort)) if i.id == image.id]
            assert len(listed) == 1 and listed[0].name == image.name and listed[0].sha256 == image.sha256
            assert not hasattr(listed[0], "provenance") and not hasattr(listed[0], "vetting")
            shown = backend.admin.show(image.id)
            assert shown.provenance == {"packages": packages} and shown.vetting["openstack"]["verdict"] == "pass"

    def test_derived_images_name_their_parent_and_are_found_by_it(self, backend):
        alice, bob = backend.users("alice", "bob")
        parent = put(alice, payload(100), "base")
        child = put(alice, payload(200), "base-hpc", format="squashfs", parent=parent.id)
        assert backend.admin.show(child.id).parent == parent.id
        assert [i.id for i in alice.list(ImageQuery(parent=parent.id))] == [child.id]
        # lineage does not leak: bob may not derive from, nor see derivations of, alice's private image
        with pytest.raises(NotFound):
            put(bob, payload(50), "mine", parent=parent.id)
        assert bob.list(ImageQuery(parent=parent.id)) == []

    def test_list_sorts_and_pages(self, backend):
        sizes = {"c-img": 300, "a-img": 100, "d-img": 400, "b-img": 200, "e-img": 500}
        for name, size in sizes.items():
            put(backend.admin, payload(size), name)

        by_name = [i.name for i in backend.admin.list(ImageQuery(sort="name"))]
        assert by_name == sorted(sizes)
        by_size_desc = [i.size for i in backend.admin.list(ImageQuery(sort="-size"))]
        assert by_size_desc == [500, 400, 300, 200, 100]
        newest_first = [i.name for i in backend.admin.list()]
        assert newest_first == list(reversed(list(sizes)))

        pages = [[i.name for i in backend.admin.list(ImageQuery(sort="name", limit=2, skip=skip))]
                 for skip in (0, 2, 4)]
        assert pages == [["a-img", "b-img"], ["c-img", "d-img"], ["e-img"]]
        # a page far past the end is empty, newest first too (the listing reads back through time)
        assert backend.admin.list(ImageQuery(skip=2_294_519)) == []
        assert backend.admin.list(ImageQuery(skip=9_007_199_254_740_991, limit=10_000)) == []

    def test_modify_renames_retags_and_changes_visibility(self, backend):
        alice, bob = backend.users("alice", "bob")
        image = put(alice, payload(100), "old", tags=["keep", "drop"])

        changed = alice.modify(image.id, ImageChanges(name="new", add_tags=["added"], remove_tags=["drop"],
                                                      description="renamed"))
        assert (changed.name, changed.tags, changed.description) == ("new", ["added", "keep"], "renamed")
        assert alice.show(image.id).name == "new"
        assert [i.id for i in alice.list(ImageQuery(name="new"))] == [image.id]
        assert alice.list(ImageQuery(name="old")) == []

        assert alice.modify(image.id, ImageChanges(public=True)).visibility == Visibility.PUBLIC
        assert bob.show(image.id).name == "new"
        with pytest.raises(Forbidden):
            bob.modify(image.id, ImageChanges(name="stolen"))
        assert alice.modify(image.id, ImageChanges(public=False)).visibility == Visibility.PRIVATE
        with pytest.raises(NotFound):
            bob.show(image.id)

    def test_remove_is_refused_while_registered_unless_forced(self, backend):
        image = put(backend.admin, payload(1000), "registered")
        backend.admin.add_registration(image.id, "opennebula", "site-a", "42")
        with pytest.raises(Conflict) as e:
            backend.admin.remove(image.id)
        assert "opennebula" in one_line(e)
        assert backend.admin.show(image.id).registrations[0].remote_id == "42"

        backend.admin.remove(image.id, force=True)
        with pytest.raises(NotFound):
            backend.admin.show(image.id)
        assert backend.used_bytes("admin") == 0
        assert (backend.gridfs_files(), backend.gridfs_chunks()) == (0, 0)

    def test_identical_content_is_stored_once_and_freed_with_the_last_image(self, backend):
        data = payload(3 * MiB)
        first = put(backend.admin, data, "one")
        second = put(backend.admin, data, "two")
        assert first.id != second.id and first.sha256 == second.sha256
        assert (backend.contents(), backend.stored_bytes()) == (1, len(data))
        assert backend.used_bytes("admin") == 2 * len(data)  # quota counts each image

        backend.admin.remove(first.id)
        assert (backend.contents(), backend.stored_bytes()) == (1, len(data))
        out = io.BytesIO()
        backend.admin.get(second.id, out)
        assert out.getvalue() == data
        assert backend.used_bytes("admin") == len(data)

        backend.admin.remove(second.id)
        assert (backend.gridfs_files(), backend.gridfs_chunks()) == (0, 0)
        assert backend.used_bytes("admin") == 0
        assert backend.admin.list() == []


class TestSharing:
    def test_share_and_unshare_decide_who_can_read(self, backend):
        alice, bob, carol = backend.users("alice", "bob", "carol")
        data = payload(5000)
        image = put(alice, data, "private")
        for outsider in (bob, carol):
            assert outsider.list() == []
            with pytest.raises(NotFound):
                outsider.show(image.id)
            with pytest.raises(NotFound):
                outsider.get(image.id, io.BytesIO())

        assert alice.share(image.id, ["bob"]).shared_with == ["bob"]
        assert [i.id for i in bob.list()] == [image.id]
        out = io.BytesIO()
        bob.get(image.id, out)
        assert out.getvalue() == data
        with pytest.raises(NotFound):
            carol.show(image.id)
        with pytest.raises(Forbidden):
            bob.share(image.id, ["carol"])
        with pytest.raises(NotFound):
            alice.share(image.id, ["nobody"])

        assert alice.unshare(image.id, ["bob"]).shared_with == []
        with pytest.raises(NotFound):
            bob.show(image.id)
        assert backend.admin.show(image.id).owner == "alice"


class TestHistory:
    def test_downloads_count_as_accesses_and_show_in_history(self, backend):
        alice, bob = backend.users("alice", "bob")
        image = put(alice, payload(2000), "watched")
        alice.get(image.id, io.BytesIO())
        alice.get(image.id, io.BytesIO(), offset=1000)

        shown = alice.show(image.id)
        assert shown.access_count == 2
        assert shown.last_access is not None and shown.last_access >= shown.created

        events = alice.history(image.id)
        assert [e.action for e in events] == ["download", "download", "upload"]
        assert {e.user for e in events} == {"alice"}
        assert events[0].detail["offset"] == 1000 and events[0].image_name == "watched"
        assert [e.action for e in alice.history(image.id, limit=1)] == ["download"]

        with pytest.raises(NotFound):
            bob.history(image.id)
        with pytest.raises(Forbidden):
            bob.history(user="alice")
        assert {e.user for e in backend.admin.history(user="alice")} == {"alice"}


class TestUsers:
    def test_admin_manages_users_quotas_roles_and_suspension(self, backend):
        added = backend.admin.add_user("dave", Role.USER, quota=10 * MiB)
        assert (added.name, added.role, added.quota_bytes, added.used_bytes) == ("dave", Role.USER, 10 * MiB, 0)
        assert [u.name for u in backend.admin.list_users()] == ["admin", "dave"]
        with pytest.raises(Conflict):
            backend.admin.add_user("dave")
        with pytest.raises(InvalidInput):
            backend.admin.add_user("Not A Name")

        assert backend.admin.set_quota("dave", 20 * MiB).quota_bytes == 20 * MiB
        assert backend.admin.set_quota("dave", None).quota_bytes is None
        with pytest.raises(InvalidInput):
            backend.admin.set_quota("dave", -1)

        dave = backend.as_user("dave")
        assert dave.whoami().name == "dave"
        with pytest.raises(Forbidden):
            dave.list_users()
        with pytest.raises(Forbidden):
            dave.add_user("eve")
        with pytest.raises(Forbidden):
            dave.issue_token("admin")
        assert dave.issue_token("dave").startswith("rain_")

        assert backend.admin.set_role("dave", Role.ADMIN).role == Role.ADMIN
        assert [u.name for u in dave.list_users()] == ["admin", "dave"]
        backend.admin.set_role("dave", Role.USER)

        assert backend.admin.suspend("dave").status == UserStatus.SUSPENDED
        with pytest.raises(Forbidden) as e:
            dave.list()
        assert "suspended" in one_line(e)
        assert backend.admin.suspend("dave", False).status == UserStatus.ACTIVE
        assert dave.list() == []

        image = put(dave, payload(100), "daves")
        with pytest.raises(Conflict):
            backend.admin.remove_user("dave")
        dave.remove(image.id)
        backend.admin.remove_user("dave")
        assert [u.name for u in backend.admin.list_users()] == ["admin"]
        with pytest.raises(Unauthorized):
            dave.list()
        with pytest.raises(NotFound):
            backend.admin.remove_user("dave")

    def test_changes_to_unknown_users_are_not_found_and_leave_no_history(self, backend):
        admin = backend.admin
        for change in (lambda: admin.set_quota("ghost", MiB), lambda: admin.set_role("ghost", Role.ADMIN),
                       lambda: admin.suspend("ghost"), lambda: admin.issue_token("ghost"),
                       lambda: admin.remove_user("ghost")):
            with pytest.raises(NotFound) as e:
                change()
            assert "ghost" in one_line(e)
        admin.set_quota("admin", MiB)
        changes = [(e.action, e.detail["name"]) for e in admin.history(user="admin") if e.action.startswith("user-")]
        assert changes == [("user-quota", "admin")]

    def test_quota_refuses_an_upload_that_does_not_fit(self, backend):
        (alice,) = backend.users("alice", quota=5 * MiB)
        kept = put(alice, payload(3 * MiB), "fits")
        with pytest.raises(QuotaExceeded) as e:
            put(alice, payload(3 * MiB), "too-much")
        assert "quota exceeded" in one_line(e)
        assert [i.id for i in alice.list()] == [kept.id]
        assert alice.whoami().used_bytes == 3 * MiB
        assert backend.db.images.count_documents({}) == 1
        assert (backend.contents(), backend.stored_bytes()) == (1, 3 * MiB)


class TestVetting:
    def test_failed_vetting_quarantines_for_that_target_and_only_admins_accept_rules(self, backend):
        (alice,) = backend.users("alice")
        image = put(alice, payload(100), "vetted")
        failed = alice.set_vetting(image.id, "opennebula", {"verdict": "fail", "findings": ["root-login"]})
        assert failed.status == Status.QUARANTINED
        assert failed.quarantined == ["opennebula"]
        assert failed.vetting["opennebula"]["findings"] == ["root-login"]
        passed_elsewhere = alice.set_vetting(image.id, "openstack", {"verdict": "pass"})
        assert passed_elsewhere.quarantined == ["opennebula"]

        with pytest.raises(Forbidden):
            alice.accept_rule(image.id, "opennebula", "root-login")
        accepted = backend.admin.accept_rule(image.id, "opennebula", "root-login")
        assert accepted.accepted_rules == {"opennebula": ["root-login"]}

        cleared = alice.set_vetting(image.id, "opennebula", {"verdict": "pass"})
        assert cleared.status == Status.AVAILABLE and cleared.quarantined == []
        with pytest.raises(InvalidInput):
            alice.set_vetting(image.id, "opennebula", {"verdict": "maybe"})


class TestErrorKinds:
    """The same mistakes raise the same kinds, with a one-line message, from both implementations."""

    @pytest.mark.parametrize("case", ["unknown id", "malformed id", "modify others", "remove registered",
                                      "quota", "not admin", "removed user"])
    def test_error_kind(self, backend, case):
        (alice,) = backend.users("alice", quota=MiB)
        image = put(backend.admin, payload(100), "admins", public=True)
        expected, call = {
            "unknown id": (NotFound, lambda: alice.show("0123456789ab")),
            "malformed id": (InvalidInput, lambda: alice.show("not-an-id")),
            "modify others": (Forbidden, lambda: alice.remove(image.id)),
            "remove registered": (Conflict, lambda: (backend.admin.add_registration(image.id, "t", "", "1"),
                                                     backend.admin.remove(image.id))),
            "quota": (QuotaExceeded, lambda: put(alice, payload(2 * MiB))),
            "not admin": (Forbidden, lambda: alice.gc()),
            "removed user": (Unauthorized, lambda: (backend.admin.remove_user("alice"), alice.list())),
        }[case]
        with pytest.raises(RainError) as e:
            call()
        assert type(e.value) is expected, f"{backend.kind}: {type(e.value).__name__}: {e.value}"
        one_line(e)
