"""What `fg-image instances reap` does with the leases killed launches left (rain/launch/cloud.py `reap`).

The end-to-end cases (a SIGKILLed launch's servers and instances released by Rain's watcher) are in
tests/integration/launch. Here: a lease that is not a launch's is dropped with a line saying so, and one
whose cloud cannot be reached stays for the next try, its failure named; a live launch's is not touched.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rain.clouds.leases import Leases
from rain.config import load_settings
from rain.launch.cloud import reap


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_reap_drops_what_is_no_launch_keeps_what_it_could_not_release_and_leaves_the_living(tmp_path: Path) -> None:
    settings = load_settings(environ={"RAIN_DATA_DIR": str(tmp_path / "data"),
                                      "RAIN_CONFIG": str(tmp_path / "absent.toml"),
                                      "RAIN_TARGETS_FILE": str(tmp_path / "absent-targets.yaml")})
    leases = Leases(settings.data_path / "launch" / "leases")
    living = leases.take("ec2-0000000a", target="ec2", site="default", tag="0000000a")
    bogus = leases.take("qemu-0000000b", target="qemu", site="", tag="0000000b")
    unknown = leases.take("ec2-0000000c", target="ec2", site="nowhere", tag="0000000c")
    for lease in (bogus, unknown):
        lease.data["pid"] = _dead_pid()
        lease.record(launch="0123456789ab")
    forgotten: list[str] = []

    lines = reap(settings, forgotten.append)

    assert lines[0].startswith("could not release launch 0000000c on ec2 site nowhere: no targets file at ")
    assert lines[1] == "dropped qemu-0000000b.json: not a launch's lease"
    assert len(lines) == 2 and forgotten == []
    assert sorted(p.name for p in leases.directory.iterdir()) == ["ec2-0000000a.json", "ec2-0000000c.json"]
    assert living.path.exists()
