"""Every long-running command shows its steps in one look: `… step`, `✓ step (1.2s)`, `✗ step (Error)`.

On a terminal the marks are coloured; in a pipe the same lines arrive as plain text with no
escape codes. Step names and details quote tool output and recipe values: they print as text.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rain.cli.progress import step_reporter, transfer

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def pipe() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system="standard", width=200), out


def run_steps(console: Console) -> None:
    reporter = step_reporter(console)
    with reporter.step("unpack"):
        reporter.info("12 files")
    with pytest.raises(OSError), reporter.step("pack"):
        raise OSError("disk full")


def test_a_pipe_gets_plain_lines_in_the_one_style() -> None:
    console, out = pipe()
    run_steps(console)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0] == "… unpack" and lines[1] == "  12 files" and lines[3] == "… pack"
    assert re.fullmatch(r"✓ unpack \(\d+\.\ds\)", lines[2]), lines
    assert lines[4] == "✗ pack (OSError)"


def test_a_terminal_shows_the_same_lines_with_coloured_marks() -> None:
    console, out = terminal()
    run_steps(console)
    shown = out.getvalue()
    assert ANSI.search(shown), "a terminal gets colour"
    piped_console, piped = pipe()
    run_steps(piped_console)
    same = [re.sub(r"\d+\.\ds", "T", line) for line in ANSI.sub("", shown).splitlines()]
    assert same == [re.sub(r"\d+\.\ds", "T", line) for line in piped.getvalue().splitlines()]


@pytest.mark.parametrize("make", [pipe, terminal])
def test_step_names_and_details_with_markup_and_escapes_print_as_text(make) -> None:
    console, out = make()
    reporter = step_reporter(console)
    # "[/]" made rich raise MarkupError mid-build; ESC reached the terminal raw
    reporter.emit("start", "install [/] packages", "")
    reporter.emit("failed", "install [/] packages", "E: Unable to locate package [bold]x\x1b[2J")
    text = ANSI.sub("", out.getvalue())
    assert "… install [/] packages" in text
    assert "✗ install [/] packages (E: Unable to locate package [bold]x\\x1b[2J)" in text
    assert "\x1b[2J" not in out.getvalue()


def test_a_batch_build_prefixes_its_steps_with_its_name() -> None:
    console, out = pipe()
    child = step_reporter(console).child("deb12")
    with child.step("packages"):
        pass
    assert out.getvalue().splitlines()[0] == "… deb12: packages"
    assert [t.step for t in child.timings] == ["packages"]


@pytest.mark.parametrize("make", [pipe, terminal])
def test_a_transfer_ends_with_one_done_line_on_a_terminal_and_in_a_pipe(make) -> None:
    console, out = make()
    with transfer("upload deb [12].raw", 3 << 20, console=console) as advance:
        advance(1 << 20)
        advance(2 << 20)
    last = ANSI.sub("", out.getvalue()).strip().splitlines()[-1]
    assert re.fullmatch(r"✓ upload deb \[12\]\.raw \(\d+\.\ds\)", last), out.getvalue()


def test_a_failed_transfer_adds_no_line_the_error_says_it() -> None:
    console, out = pipe()
    with pytest.raises(OSError), transfer("download deb", 10, console=console):
        raise OSError("gone")
    assert out.getvalue() == ""
