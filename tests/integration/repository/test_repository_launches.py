"""Launch records (`fg-image launch` writes them, `fg-image instances` lists and releases them), over the
pymongo Store and the HTTP Client talking to a real `fg-image serve`: both must behave the same."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from support.repository import payload, put, refused

from rain.errors import ExitCode, Forbidden, InvalidInput, NotFound
from rain.repository.client import Client
from rain.repository.connect import open_store
from rain.repository.models import Launch, LaunchedMachine, LaunchIn

pytestmark = pytest.mark.integration
EXPIRES = datetime(2031, 5, 17, 12, 30, tzinfo=UTC)


def machines(count: int = 2, **change: Any) -> list[LaunchedMachine]:
    return [LaunchedMachine(name=f"node{i}", address=f"10.77.0.{10 + i}", ssh_host="127.0.0.1",
                            ssh_port=40000 + i, remote_id=str(5000 + i), **change) for i in range(1, count + 1)]


def launch_of(image_id: str, **change: Any) -> LaunchIn:
    fields: dict[str, Any] = {"image": image_id, "target": "qemu", "site": "local", "host": "login1.example.org",
                              "user": "debian", "machines": machines(), "expires": EXPIRES,
                              "detail": {"cores": 2, "memory_mib": 2048, "console_logs": "/tmp/rain-launch-x"}}
    return LaunchIn(**{**fields, **change})


def unchecked(image_id: str, **change: Any) -> LaunchIn:
    """A launch record as a caller could hand it over: built without checks (model_construct)."""
    return LaunchIn.model_construct(**{**dict(launch_of(image_id)), **change})


def actions(repo: Any, image_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The image's launch and release events, newest first, as (action, user, detail)."""
    return [(e.action, e.user, e.detail) for e in repo.history(image_id) if e.action in ("launch", "release")]


def test_a_launch_is_its_owners_to_list_and_release(backend):
    alice, bob = backend.users("alice", "bob")
    image = put(alice, payload(100), "compute-node", public=True)  # bob may read it; still not her launch's
    before = datetime.now(UTC)
    launch = alice.add_launch(launch_of(image.id))
    after = datetime.now(UTC)

    assert re.fullmatch(r"[0-9a-f]{12}", launch.id) and launch.owner == "alice"
    assert before - timedelta(milliseconds=1) <= launch.started <= after
    assert (launch.image, launch.target, launch.site, launch.host, launch.user) == \
        (image.id, "qemu", "local", "login1.example.org", "debian")
    assert launch.machines == machines() and launch.expires == EXPIRES
    assert launch.detail["memory_mib"] == 2048
    assert alice.launches() == [launch]
    assert actions(alice, image.id) == [("launch", "alice", {"launch": launch.id, "target": "qemu",
                                                             "site": "local", "machines": 2})]

    # bob sees none of it, and cannot tell her launch's id from one that does not exist
    assert bob.launches() == []
    stranger = refused(NotFound, lambda: bob.remove_launch(launch.id))
    unknown = refused(NotFound, lambda: bob.remove_launch("0" * 12))
    assert stranger.replace(launch.id, "ID") == unknown.replace("0" * 12, "ID")
    assert alice.launches() == [launch]

    time.sleep(0.01)  # the record's start is kept to the millisecond
    second = alice.add_launch(launch_of(image.id, machines=machines(1), expires=None))
    assert [x.id for x in alice.launches()] == [second.id, launch.id]  # newest first

    assert alice.remove_launch(launch.id) == launch
    assert alice.launches() == [second]
    assert refused(NotFound, lambda: alice.remove_launch(launch.id)) == f"no launch {launch.id}"
    assert actions(alice, image.id)[0] == ("release", "alice", {"launch": launch.id, "target": "qemu",
                                                                "owner": "alice", "machines": 2})
    assert alice.remove_launch(second.id) == second
    assert alice.launches() == [] and backend.db.launches.count_documents({}) == 0


def test_a_launch_needs_an_image_the_user_may_read(backend):
    alice, bob = backend.users("alice", "bob")
    private = put(alice, payload(100), "private-node")
    no_such_image = refused(NotFound, lambda: bob.add_launch(launch_of("0" * 12)))
    assert refused(NotFound, lambda: bob.add_launch(launch_of(private.id))) == \
        no_such_image.replace("0" * 12, private.id)
    assert bob.launches() == [] and backend.db.launches.count_documents({}) == 0
    assert actions(alice, private.id) == []

    alice.share(private.id, ["bob"])  # a reader may launch it; the launch is bob's
    launch = bob.add_launch(launch_of(private.id))
    assert launch.owner == "bob" and bob.launches() == [launch] and alice.launches() == []


def test_an_administrator_sees_and_releases_everyones_launches(backend):
    alice, bob = backend.users("alice", "bob")
    image = put(alice, payload(100), "shared-node", public=True)
    alices = alice.add_launch(launch_of(image.id))
    time.sleep(0.01)
    bobs = bob.add_launch(launch_of(image.id, target="openstack", site="cloud1", machines=machines(3)))

    assert backend.admin.launches(everyone=True) == [bobs, alices]
    assert backend.admin.launches() == []  # without everyone: their own, as for anyone
    assert "administrator" in refused(Forbidden, lambda: alice.launches(everyone=True))

    assert backend.admin.remove_launch(alices.id) == alices
    assert alice.launches() == [] and bob.launches() == [bobs]
    assert backend.admin.launches(everyone=True) == [bobs]
    assert actions(alice, image.id)[0] == ("release", "admin", {"launch": alices.id, "target": "qemu",
                                                                "owner": "alice", "machines": 2})


def _bad_launches(image_id: str) -> list[tuple[str, LaunchIn]]:
    """(how the message starts, a launch record a caller got wrong), each wrong in one way."""
    def built(**change: Any) -> LaunchIn:
        return unchecked(image_id, **change)

    def machine(**change: Any) -> LaunchedMachine:
        return LaunchedMachine.model_construct(**{**dict(machines(1)[0]), **change})

    changed = launch_of(image_id)
    changed.machines[0].ssh_port = 0  # pydantic does not check an assignment
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"d": deep}
    return [
        ("machines: List should have at most 64 items", built(machines=machines(65))),
        ("machines: List should have at least 1 item", built(machines=[])),
        ("machines.ssh_port: Input should be greater than or equal to 1", changed),
        ("machines.name: bad host name 'node1\\nevil'", built(machines=[machine(name="node1\nevil")])),
        ("machines.ssh_port: must be a whole number", built(machines=[machine(ssh_port="22")])),
        ("machines.ssh_port: Input should be less than or equal to 65535", built(machines=[machine(ssh_port=65536)])),
        ("site: must not contain control characters", built(site="local\x1b[2J")),
        ("detail: nested deeper than 32 levels", built(detail={"deep": deep})),
        ("detail: launch detail is", built(detail={"log": "x" * (1 << 20)})),
        ("detail: key '$where'", built(detail={"$where": "sleep(1)"})),
        ("target: bad target name", built(target="../x")),
    ]


def test_bad_launch_records_are_refused_in_one_line_and_nothing_is_stored(backend):
    (alice,) = backend.users("alice")
    image = put(alice, payload(100), "node")
    for names, bad in _bad_launches(image.id):
        with pytest.raises(InvalidInput) as e:
            alice.add_launch(bad)
        assert e.value.exit_code == ExitCode.USAGE == 2
        assert e.value.message.startswith(names) and "\n" not in e.value.message, (names, e.value.message)
    # JSON would carry a datetime as text; the record must not depend on which face stored it
    when = refused(InvalidInput, lambda: alice.add_launch(unchecked(image.id, detail={"booted": datetime.now(UTC)})))
    assert when.startswith("detail: datetime at booted is not a JSON value")
    assert "launch id" in refused(InvalidInput, lambda: alice.remove_launch("../users"))

    assert alice.launches() == [] and backend.db.launches.count_documents({}) == 0
    assert actions(alice, image.id) == []


def test_the_service_answers_a_bad_launch_with_400_and_the_stores_message(settings, service):
    """A client other than Rain's (which checks before sending) is refused by the service itself."""
    admin = open_store(settings, "admin")
    admin.add_user("alice")
    alice = Client(service.url, admin.issue_token("alice"), timeout=60)
    direct = open_store(settings, "alice")
    image = put(alice, payload(100), "node")

    def post(body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{service.url}/api/v1/launches", json=body, timeout=60,
                             headers={"Authorization": f"Bearer {alice.token}"})

    for names, bad in _bad_launches(image.id):
        response = post(bad.model_dump(mode="json", warnings=False))
        assert response.status_code == 400, (names, response.status_code, response.text[:300])
        answer = response.json()
        assert set(answer) == {"error", "message", "hint"} and answer["error"] == "invalid_input"
        assert answer["message"] == refused(InvalidInput, lambda b=bad: direct.add_launch(b)), names
    assert alice.launches() == [] and direct.launches() == []

    response = post(launch_of(image.id).model_dump(mode="json"))
    assert response.status_code == 201
    assert [Launch(**response.json())] == alice.launches() == direct.launches()
