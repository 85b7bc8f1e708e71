"""launch_max_machines holds for launches started together (rain/launch/cap.py).

A launch is recorded only once its machines run, after fetching the disk or registering the image, so
each launch claims its machines before it starts any. These tests run the claims in real processes: a
second launch counts the first's machines before they are recorded, a claim ends when the record is
made, and a claim whose process was killed stops counting. The CLI's use of it (a refused `fg-image
launch`) is in tests/integration/launch/test_launch_openstack.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.launching import claiming

from rain.errors import QuotaExceeded
from rain.launch.cap import claimed


def test_launches_started_together_pass_the_cap_only_as_far_as_it_goes(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    launches = [claiming(claims, 1, 2) for _ in range(4)]
    try:
        answers = [p.stdout.readline() for p in launches if p.stdout]
        assert sorted(a.split()[0] for a in answers) == ["claimed", "claimed", "refused", "refused"], answers
        assert "1 more machine(s) would make 3; launch_max_machines lets you run 2 at once here" in \
            next(a for a in answers if a.startswith("refused"))
    finally:
        for p in launches:
            p.communicate("\n", timeout=30)
    assert not list(claims.glob("*.json")), "each claim ends with its launch"


def test_a_killed_launchs_claim_stops_counting_and_is_removed(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    holder = claiming(claims, 2, 2)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
        with pytest.raises(QuotaExceeded, match=r"1 more machine\(s\) would make 3"), claimed(claims, 1, 2, lambda: 0):
            pass
    finally:
        holder.kill()
        holder.wait()
    with claimed(claims, 2, 2, lambda: 0):
        [mine] = claims.glob("*.json")
        assert mine.name.startswith(f"claim-{os.getpid()}-"), "the killed launch's claim was removed"
    assert not list(claims.glob("*.json"))


def test_a_recorded_launch_counts_by_its_record_and_no_longer_by_its_claim(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    running = 0

    def record() -> str:
        nonlocal running
        running = 2  # what the repository's records now say runs
        return "launch-id"

    with claimed(claims, 2, 3, lambda: running) as claim:
        other = claiming(claims, 1, 3)  # 2 claimed + 1: fits
        assert other.stdout is not None and other.stdout.readline() == "claimed\n"
        other.communicate("\n", timeout=30)
        assert claim.recorded(record) == "launch-id"
        assert not list(claims.glob("*.json"))
        with pytest.raises(QuotaExceeded, match=r"2 more machine\(s\) would make 4"), \
                claimed(claims, 2, 3, lambda: running):
            pass
        with claimed(claims, 1, 3, lambda: running):  # counted once: 2 recorded + 1
            pass
