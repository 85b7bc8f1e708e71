"""Failures of the world, not of Rain: a database that goes away, a disk that is full, a missing directory.

They reach the CLI as pymongo errors and OSErrors from deep inside a command.
Reported as "internal error, please report it" they send users to the wrong
people; here they become the Rain error of their kind, with a hint, so they
get a one-line message and their own exit code like every other failure.
"""

from __future__ import annotations

import errno
import re
import sys
from pathlib import Path

from rain.errors import ConfigError, IntegrityError, InvalidInput, RainError, StorageError, Unreachable, one_line

# Errors a full or read-only disk gives: locally (errno) and from a MongoDB-wire server (code, or its words).
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}
# What a local path gives; sockets (requests' errors are OSErrors too) give other errnos, or none.
FILE_ERRNOS = _DISK_ERRNOS | {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM,
                              errno.ENAMETOOLONG, errno.EEXIST, errno.ELOOP}
_DISK_CODES = {14031}  # OutOfDiskSpace
_DISK_WORDS = re.compile(r"no space|disk (is )?full|disk quota|read-?only", re.IGNORECASE)
_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
_GONE_CODES = {43, 50, 91, 189, 10107, 11600, 11602}  # cursor lost, time limit, shutdown, stepped down

_RETRY = "check that the database server is up and RAIN_MONGO_URI points at it, then run the command again"


def known_failure(e: BaseException) -> RainError | None:
    """The Rain error an unexpected exception really is, or None for a genuine bug."""
    pymongo_errors = sys.modules.get("pymongo.errors")  # loaded only if the command used the database
    if pymongo_errors is not None and isinstance(e, pymongo_errors.PyMongoError):
        return database_failure(e)
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:  # other OSErrors may well be Rain's bugs
        return file_failure(e, e.filename or "a file", "write")
    return None


def database_failure(e: Exception) -> RainError | None:
    """A pymongo error met after the database first answered (direct mode)."""
    from gridfs.errors import CorruptGridFile
    from pymongo.errors import ConnectionFailure, DuplicateKeyError, NetworkTimeout, OperationFailure

    what = f"{type(e).__name__}: {one_line(e)}"
    if isinstance(e, NetworkTimeout):  # answered once, then hung: a wedged server, not a lost one
        return Unreachable(f"MongoDB stopped answering in the middle of an operation ({what})",
                           hint="restart the database server (the embedded one: `fg-image repo stop`, and the "
                                "next command starts it); RAIN_DB_TIMEOUT sets how long Rain waits")
    if isinstance(e, ConnectionFailure):
        return Unreachable(f"lost the connection to MongoDB ({what})",
                           hint=_RETRY + "; a download resumes where it stopped")
    if isinstance(e, CorruptGridFile):
        return IntegrityError(f"the stored bytes are incomplete ({what})",
                              hint="re-upload the image; an administrator can run `fg-image repo gc`")
    if not isinstance(e, OperationFailure) or isinstance(e, DuplicateKeyError):
        return None  # a duplicate key the store did not expect is Rain's bug
    if e.code in _AUTH_CODES:
        return ConfigError(f"MongoDB refused Rain's credentials ({what})",
                           hint="check the user and password in RAIN_MONGO_URI")
    if e.code in _DISK_CODES or _DISK_WORDS.search(str(e)):
        return StorageError(f"the database cannot store any more ({what})",
                            hint="free space on the database server's disk, then run the command again")
    if e.code in _GONE_CODES:
        return Unreachable(f"MongoDB stopped answering ({what})", hint=_RETRY)
    return None


def file_failure(e: OSError, path: str | Path, doing: str = "write") -> RainError:
    """An OSError on a local file, naming the file; a full disk is StorageError, the rest bad input."""
    message = f"cannot {doing} {path}: {e.strerror or one_line(e)}"
    if e.errno in _DISK_ERRNOS:
        return StorageError(message, hint="free some space, or choose another disk")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return InvalidInput(message, hint="check that the directory exists")
    if e.errno in (errno.EACCES, errno.EPERM):
        return InvalidInput(message, hint="choose a place you may write, or fix its permissions")
    return InvalidInput(message, hint="choose another path")
