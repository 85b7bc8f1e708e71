"""Leases of cloud machines, a builder's or a launch's (rain/clouds/leases.py): which ones are reaped.

A lease is stale only when its owner is surely gone: no such process, or the pid now belongs to a
process that started at another time. A live owner's lease, and one written on another host (a shared
data dir), are never reaped. The end-to-end case (a SIGKILLed build's Nova server deleted by the next
run) is tests/e2e/generate/test_generate_kill.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from rain.clouds.leases import Leases, reap_builds
from rain.errors import BuildError


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_running_owners_lease_is_not_stale_and_a_dead_ones_is(tmp_path: Path) -> None:
    leases = Leases(tmp_path / "leases")
    mine = leases.take("rain-mine")
    mine.record(server="s-1")
    assert leases.stale() == []
    gone = leases.take("rain-gone")
    gone.data["pid"] = _dead_pid()
    gone.record(server="s-2", keypair="rain-gone")
    assert [lease.name for lease in leases.stale()] == ["rain-gone"]
    assert leases.stale()[0].ids == {"server": "s-2", "keypair": "rain-gone"}


def test_a_killed_owner_not_yet_waited_for_holds_nothing(tmp_path: Path) -> None:
    """A SIGKILLed fg-image stays a zombie until its parent (a shell, a test) waits: its watcher reaps then."""
    owner = subprocess.Popen(["sleep", "60"])
    try:
        leases = Leases(tmp_path / "leases")
        lease = leases.take("rain-zombie", target="ec2")
        lease.data.update(pid=owner.pid, started=Path(f"/proc/{owner.pid}/stat").read_text().rsplit(")", 1)[-1]
                          .split()[19])
        lease.record(node1="i-1")
        assert leases.stale() == []
        owner.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{owner.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed process became a zombie"
            time.sleep(0.05)
        [stale] = leases.stale()
        assert (stale.data["target"], stale.ids) == ("ec2", {"node1": "i-1"})
    finally:
        owner.wait()


def test_a_reused_pid_does_not_keep_a_lease_alive(tmp_path: Path) -> None:
    leases = Leases(tmp_path / "leases")
    lease = leases.take("rain-reused")
    lease.data["started"] = "1"  # this pid, but a process that started at another time
    lease.record(vm="7")
    assert [s.name for s in leases.stale()] == ["rain-reused"]


def test_another_hosts_lease_is_left_alone_and_a_damaged_one_is_stale(tmp_path: Path) -> None:
    leases = Leases(tmp_path / "leases")
    other = leases.take("rain-elsewhere")
    other.data.update(host="another-host", pid=_dead_pid())
    other.record(vm="8")
    (tmp_path / "leases" / "rain-damaged.json").write_text("{not json")
    assert [s.path.name for s in leases.stale()] == ["rain-damaged.json"]


def test_reap_deletes_says_why_and_keeps_a_lease_it_could_not_delete(tmp_path: Path) -> None:
    leases = Leases(tmp_path / "leases")
    for name, server in (("rain-a", "s-a"), ("rain-b", "s-b")):
        lease = leases.take(name)
        lease.data["pid"] = _dead_pid()
        lease.record(server=server)
    deleted: list[dict[str, str]] = []

    def release(ids: dict[str, str]) -> None:
        if ids["server"] == "s-b":
            raise BuildError("OpenStack deleting server s-b failed: 503")
        deleted.append(ids)

    lines = reap_builds(leases, "OpenStack", release)
    assert deleted == [{"server": "s-a"}]
    assert lines[0].startswith("deleted OpenStack server s-a left by build rain-a: its fg-image pid ")
    assert lines[0].endswith(" is gone")
    assert lines[1] == ("could not delete OpenStack server s-b of build rain-b: "
                        "OpenStack deleting server s-b failed: 503")
    assert sorted(p.name for p in (tmp_path / "leases").iterdir()) == ["rain-b.json"], "kept for the next try"
    assert json.loads((tmp_path / "leases" / "rain-b.json").read_text())["ids"] == {"server": "s-b"}
