"""Rain's errors: one base class, a kind per failure users can act on.

Every error carries a one-line message and, where there is one, a hint saying
how to fix it. The CLI entry point turns them into one red line and the exit
code of their kind; the HTTP service turns them into a status and a JSON body,
and the HTTP client turns that body back into the same kind.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    FORBIDDEN = 4
    UNAUTHORIZED = 5
    CONFLICT = 6
    QUOTA = 7
    UNREACHABLE = 8
    INTEGRITY = 9
    BUILD = 10
    VET_FAILED = 11
    TARGET = 12
    STORAGE = 13
    NOT_REPRODUCED = 14
    INTERRUPTED = 130


def one_line(text: object) -> str:
    """The first non-empty line of an error text (a library's, a tool's), for messages that stay one line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(text).__name__


class RainError(Exception):
    """A failure with a user-facing message and an optional fix hint."""

    exit_code: ExitCode = ExitCode.ERROR
    http_status: int = 500
    kind: str = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        text = self.message.replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text


class InvalidInput(RainError):
    """A flag, field, file or request body is wrong."""

    exit_code = ExitCode.USAGE
    http_status = 400
    kind = "invalid_input"


class ConfigError(InvalidInput):
    kind = "config"


class TooLarge(InvalidInput):
    """A request body over the service's limit: refused before it is read, so it cannot exhaust memory."""

    http_status = 413
    kind = "too_large"


class NotFound(RainError):
    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    kind = "not_found"


class Unauthorized(RainError):
    exit_code = ExitCode.UNAUTHORIZED
    http_status = 401
    kind = "unauthorized"


class Forbidden(RainError):
    exit_code = ExitCode.FORBIDDEN
    http_status = 403
    kind = "forbidden"


class Conflict(RainError):
    exit_code = ExitCode.CONFLICT
    http_status = 409
    kind = "conflict"


class QuotaExceeded(RainError):
    exit_code = ExitCode.QUOTA
    http_status = 413
    kind = "quota_exceeded"


class Unreachable(RainError):
    exit_code = ExitCode.UNREACHABLE
    http_status = 503
    kind = "unreachable"


class IntegrityError(RainError):
    """Bytes did not match their checksum or declared size."""

    exit_code = ExitCode.INTEGRITY
    http_status = 422
    kind = "integrity"


class BuildError(RainError):
    exit_code = ExitCode.BUILD
    http_status = 500
    kind = "build"


class RecipeError(InvalidInput):
    kind = "recipe"


class VetFailed(RainError):
    exit_code = ExitCode.VET_FAILED
    http_status = 422
    kind = "vet_failed"


class TargetError(RainError):
    exit_code = ExitCode.TARGET
    http_status = 502
    kind = "target"


class StorageError(RainError):
    """A disk is full or refuses writes: the database's, or the one a download goes to.
    Nothing the user typed is wrong and nothing in Rain is broken: space or a mount needs fixing."""

    exit_code = ExitCode.STORAGE
    http_status = 507
    kind = "storage"


class ToolMissing(RainError):
    """A system tool Rain needs is not installed."""

    kind = "tool_missing"


class Interrupted(RainError):
    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"


KINDS: dict[str, type[RainError]] = {
    cls.kind: cls
    for cls in (
        RainError, InvalidInput, ConfigError, TooLarge, NotFound, Unauthorized, Forbidden,
        Conflict, QuotaExceeded, Unreachable, IntegrityError, BuildError,
        RecipeError, VetFailed, TargetError, StorageError, ToolMissing, Interrupted,
    )
}


def from_kind(kind: str, message: str, hint: str | None = None) -> RainError:
    """Rebuild an error sent over the wire as the same kind."""
    return KINDS.get(kind, RainError)(message, hint)
