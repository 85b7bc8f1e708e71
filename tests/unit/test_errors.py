"""rain/errors.py: error kinds survive the wire, map to their exit codes and print on one line."""

from __future__ import annotations

from rain.errors import KINDS, ExitCode, InvalidInput, NotFound, QuotaExceeded, from_kind


def test_errors_cross_the_wire_as_the_same_kind():
    for kind, cls in KINDS.items():
        back = from_kind(kind, "message", "hint")
        assert type(back) is cls and back.one_line() == "message (hint)"
    assert type(from_kind("something-new", "m")).__name__ == "RainError"
    assert (NotFound.exit_code, QuotaExceeded.exit_code, InvalidInput.exit_code) == \
        (ExitCode.NOT_FOUND, ExitCode.QUOTA, ExitCode.USAGE)
    assert InvalidInput("two\nlines").one_line() == "two lines"
