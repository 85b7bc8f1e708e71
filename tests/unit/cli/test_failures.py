"""Failures of the world as Rain errors with their own exit codes: the pure mapping in rain.cli.failures."""

from __future__ import annotations

import errno

import pytest
from gridfs.errors import CorruptGridFile
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from rain.cli.failures import file_failure, known_failure
from rain.errors import ExitCode


@pytest.mark.parametrize("error, code", [
    (AutoReconnect("127.0.0.1:27017: connection closed"), ExitCode.UNREACHABLE),
    (NetworkTimeout("timed out"), ExitCode.UNREACHABLE),
    (ServerSelectionTimeoutError("No servers found"), ExitCode.UNREACHABLE),
    (OperationFailure("interrupted at shutdown", code=11600), ExitCode.UNREACHABLE),
    (OperationFailure("Out of disk space", code=14031), ExitCode.STORAGE),
    (WriteError("database or disk is full", code=1), ExitCode.STORAGE),
    (OperationFailure("Authentication failed.", code=18), ExitCode.USAGE),
    (CorruptGridFile("no chunk #3"), ExitCode.INTEGRITY),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x"), ExitCode.STORAGE),
])
def test_a_failing_world_gets_its_own_exit_code_and_one_line(error, code):
    known = known_failure(error)
    assert known is not None and known.exit_code == code
    assert "\n" not in known.message and known.hint


@pytest.mark.parametrize("error", [
    DuplicateKeyError("E11000 duplicate key", code=11000),  # the store should have handled it: a bug
    OperationFailure("unknown operator: $foo", code=2),
    OSError(errno.ENOENT, "No such file or directory", "/usr/lib/rain/x"),  # most likely Rain's own mistake
    KeyError("x"),
])
def test_what_may_be_a_bug_in_rain_stays_an_internal_error(error):
    assert known_failure(error) is None


@pytest.mark.parametrize("err, code", [
    (errno.ENOENT, ExitCode.USAGE), (errno.EACCES, ExitCode.USAGE), (errno.EISDIR, ExitCode.USAGE),
    (errno.ENOSPC, ExitCode.STORAGE), (errno.EROFS, ExitCode.STORAGE),
])
def test_a_file_that_cannot_be_written_is_named(err, code):
    failure = file_failure(OSError(err, "reason"), "/some/where.raw")
    assert failure.exit_code == code
    assert failure.message == "cannot write /some/where.raw: reason"
