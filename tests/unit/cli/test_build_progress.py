"""A build's progress lines on a terminal quote tool output and recipe values: they must print as text."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from rain.cli import build


def test_progress_line_with_markup_and_escapes_prints_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(build, "err_console", Console(file=out, force_terminal=True, color_system=None, width=200))
    reporter = build.progress_reporter()
    # "[/]" made rich raise MarkupError mid-build; ESC reached the terminal raw
    build_step = "install [/] packages"
    reporter.emit("start", build_step, "E: Unable to locate package [bold]x\x1b[2J")
    reporter.emit("done", build_step, "")
    text = out.getvalue()
    assert "install [/] packages" in text
    assert "Unable to locate package [bold]x\\x1b[2J" in text
    assert "\x1b[2J" not in text
