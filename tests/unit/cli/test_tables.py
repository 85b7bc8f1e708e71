"""Every table `fg-image` prints has one look (CAPITAL headers, no box) and one way of writing sizes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rain.cli import render
from rain.cli.common import console
from rain.cli.tokens import tokens_table
from rain.generate.batch import Outcome
from rain.generate.cache import CacheEntry, CacheKind
from rain.repository.models import Registration, TokenInfo
from rain.sizes import human

NOW = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
BOX = set("─│┃━┏┓┗┛┡┩└┘├┤┼╭╮╰╯")


def _registrations() -> None:
    render.registrations_table([Registration(target="openstack", site="lab", remote_id="img-1", when=NOW,
                                             detail={"derived_image": "0123456789ab"})])


def _cache() -> None:
    render.cache_table([CacheEntry(CacheKind.BASES, "debian-bookworm", Path("/c/b"), 3 * 2**30, NOW.timestamp(),
                                   "bookworm amd64")], Path("/c"))


def _batch() -> None:
    render.batch_table("b.yaml: 1 builds in 3s", [Outcome("a.yaml", "debian", "built", 3.0, {"raw": "0123456789ab"})])


def _tokens() -> None:
    tokens_table([TokenInfo(id="t1", user="alice", name="ci", created=NOW)])


@pytest.mark.parametrize("show, headers", [
    (_registrations, ["TARGET", "SITE", "REMOTE ID", "WHEN", "DERIVED IMAGE"]),
    (_cache, ["KIND", "KEY", "SIZE", "LAST USED", "DETAIL"]),
    (_batch, ["ENTRY", "IMAGE", "OUTCOME", "TIME", "IMAGE IDS / ERROR"]),
    (_tokens, ["ID", "USER", "NAME", "CREATED", "LAST USED", "EXPIRES"]),
])
def test_every_table_has_capital_headers_and_no_box(show, headers: list[str]) -> None:
    with console.capture() as captured:
        show()
    out = captured.get()
    header = next(line for line in out.splitlines() if headers[0] in line)
    assert [h for h in headers if h in header] == headers
    assert not BOX & set(out), out


def test_cache_sizes_are_written_like_every_other_size() -> None:
    with console.capture() as captured:
        _cache()
    out = captured.get()
    assert "3.0 GiB" in out and human(3 * 2**30) == "3.0 GiB"
    assert out.splitlines()[-1] == "total 3.0 GiB in /c"
