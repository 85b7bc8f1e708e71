"""Values others control, shown as text and turned into file names: the pure pieces of rain.cli.untrusted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rain.cli import render
from rain.cli.common import console
from rain.cli.untrusted import checked_id, local_file_name, markup, plain, visible
from rain.errors import IntegrityError
from rain.repository.models import Image, OsInfo, Status

TERMINAL_ACTORS = ["\x1b", "\x07", "\x08", "\r", "\n", "\x9b", "\x00", "\u202e", "\u2028", "\udcff", "\x7f"]


@pytest.mark.parametrize("ch", TERMINAL_ACTORS)
def test_visible_writes_out_every_character_a_terminal_acts_on(ch):
    shown = visible(f"a{ch}b")
    assert shown.isprintable() and shown.startswith("a") and shown.endswith("b")
    assert shown[1:-1] == repr(ch)[1:-1]  # the way Python writes it: \x1b, \u202e, ...


def test_visible_leaves_ordinary_text_alone():
    assert visible("Debian 12 (bookworm) — x86_64, ü, 雨, [/]") == "Debian 12 (bookworm) — x86_64, ü, 雨, [/]"


def test_plain_and_markup_show_markup_as_the_text_it_is():
    with console.capture() as captured:
        console.print(plain("[/] [bold]x\x1b[2J"))
        console.print(f"[dim]{markup('[/]closing')}[/dim]")
    assert captured.get() == "[/] [bold]x\\x1b[2J\n[/]closing\n"


def test_image_detail_renders_hostile_fields_as_visible_text():
    image = Image(id="0123456789ab", name="[/]", owner="\x1b]0;pwned\x07", os=OsInfo(family="[/]"),
                  format="raw", size=1, status=Status.AVAILABLE, description="\x1b[2J", tags=["[red]"],
                  created=datetime.now(UTC), provenance={"recipe_hash": 5, "packages": "many"},
                  vetting={"hpc": "not a report"})
    with console.capture() as captured:
        render.image_detail(image)
        render.images_table([image])
    out = captured.get()
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out and "\\x1b[2J" in out and "[red]" in out


@pytest.mark.parametrize("name, fmt, expected", [
    ("debian-12.x86_64", "qcow2", "debian-12.x86_64.qcow2"),  # every valid name comes through unchanged
    ("../../evil", "raw", "evil.raw"),
    (".hidden", "tar.zst", "hidden.tar.zst"),
    ("a/b\\c", "raw", "a_b_c.raw"),
    ("", "", "0123456789ab"),
    ("...", "/", "0123456789ab"),
    ("-rf", "raw", "rf.raw"),
])
def test_local_file_name(name, fmt, expected):
    assert local_file_name(name, fmt, "0123456789ab") == expected


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=300), st.text(max_size=60))
def test_local_file_name_is_always_one_safe_name(name, fmt):
    result = local_file_name(name, fmt, "0123456789ab")
    assert result and result.isascii() and result.isprintable()
    assert "/" not in result and "\\" not in result and ".." not in result
    assert not result.startswith((".", "-"))
    assert len(result.encode()) <= 161


@pytest.mark.parametrize("answered", ["../../x", "0123456789AB", "", "fedcba987654"])
def test_an_image_id_the_service_made_up_is_refused(answered):
    with pytest.raises(IntegrityError):
        checked_id(answered, "0123456789ab")
    assert checked_id("0123456789ab", "0123456789ab") == "0123456789ab"


@pytest.mark.parametrize("image_id", ["../../x", "0123456789AB", ""])
def test_no_file_is_named_after_a_malformed_id(image_id):
    with pytest.raises(IntegrityError):
        local_file_name("x", "raw", image_id)


def test_a_vet_report_shows_the_file_names_an_image_chose_as_text():
    from rain.cli.register import render_report
    from rain.register.models import Finding, VetReport

    finding = Finding(rule="setuid", severity="high", message="setuid [/] binary", hint="remove it",
                      paths=["/usr/bin/\x1b]0;pwned\x07", "/etc/[bold]x"], blocking=True)
    report = VetReport(subject="[/]\x1b[2J", policy="hpc", verdict="fail", block_at="high", findings=[finding])
    with console.capture() as captured:
        render_report(report)
    out = captured.get()
    assert "\x1b" not in out and "\x07" not in out
    assert "/usr/bin/\\x1b]0;pwned\\x07" in out and "[/]\\x1b[2J" in out and "/etc/[bold]x" in out
