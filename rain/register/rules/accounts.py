"""Account rules: empty or well-known passwords, extra uid-0 accounts."""

from __future__ import annotations

import logging
import time
import warnings

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity
from rain.register.rules import Rule, data_lines, hits

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # Python without libcrypt: known-password rule checks the list only as plain text
        _crypt = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_LOCKED_PREFIXES = ("!", "*")


def _shadow(root: RootFS) -> dict[str, str]:
    """user -> password field, from /etc/shadow, falling back to /etc/passwd's second field."""
    fields: dict[str, str] = {}
    for line in (root.read_text("/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 7:
            fields[parts[0]] = parts[1]
    for line in (root.read_text("/etc/shadow") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 2 and parts[0] in fields and fields[parts[0]] in ("x", ""):
            fields[parts[0]] = parts[1]
    return fields


def check_empty(root: RootFS) -> list[RawFinding]:
    return hits("empty-password", [f"/etc/shadow:{u}" for u, pw in _shadow(root).items() if pw == ""])


_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHEAP_PREFIXES = ("$1$", "$5$", "$6$", "$2a$", "$2b$", "$2y$", "$y$")
MAX_SHA_ROUNDS = 50_000  # glibc's default is 5000; 999999999 makes one crypt() take many minutes
MAX_BCRYPT_COST = 12
MAX_YESCRYPT_NLOG2 = 14  # Debian's default is 12 (16 MiB); each step up doubles time and memory
CHECK_BUDGET = 30.0  # seconds the known-password rule spends hashing, whatever the image holds


def _affordable(hashed: str) -> bool:
    """Whether one crypt() of this hash is cheap: the image chooses the cost, so an image could
    otherwise make vetting hash for hours."""
    if not hashed.startswith(_CHEAP_PREFIXES):
        return False
    fields = hashed.split("$")
    if hashed.startswith(("$5$", "$6$")) and fields[2].startswith("rounds="):
        rounds = fields[2][len("rounds="):]
        return rounds.isdigit() and int(rounds) <= MAX_SHA_ROUNDS
    if hashed.startswith("$2"):
        return fields[2].isdigit() and int(fields[2]) <= MAX_BCRYPT_COST
    if hashed.startswith("$y$"):
        params = fields[2]
        return len(params) == 3 and params[1] in _ITOA64 and _ITOA64.index(params[1]) + 1 <= MAX_YESCRYPT_NLOG2 \
            and params[2] in _ITOA64 and _ITOA64.index(params[2]) + 1 <= 32
    return True


def _matches(password: str, hashed: str) -> bool:
    if hashed == password:
        return True
    if _crypt is None or not hashed.startswith("$"):
        return False
    try:
        return _crypt.crypt(password, hashed) == hashed
    except (OSError, ValueError):
        return False


def check_known(root: RootFS) -> list[RawFinding]:
    """Hash every well-known password against each account's hash, within a time budget. An account whose
    hash is too costly to check, or that the budget did not reach, is reported as unchecked: an image must
    not pass this rule by choosing a cost that makes checking it take hours."""
    weak = data_lines("weak_passwords.txt")
    bad, unchecked = [], []
    deadline = time.monotonic() + CHECK_BUDGET
    for user, pw in sorted(_shadow(root).items(), key=lambda kv: kv[0] != "root"):  # root first
        if not pw or pw.startswith(_LOCKED_PREFIXES) or pw == "x":
            continue
        if time.monotonic() > deadline or (pw.startswith("$") and not _affordable(pw)):
            unchecked.append(f"/etc/shadow:{user} (not checked: its hash costs more than Rain spends on one)")
        elif any(_matches(w, pw) for w in weak + [user]):
            bad.append(f"/etc/shadow:{user}")
    if unchecked:
        log.warning("known-password: %d accounts not checked (hash cost or the %.0fs budget)", len(unchecked),
                    CHECK_BUDGET)
    return hits("known-password", bad + unchecked)


def check_uid0(root: RootFS) -> list[RawFinding]:
    extra = []
    for line in (root.read_text("/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2] == "0" and parts[0] != "root":
            extra.append(f"/etc/passwd:{parts[0]}")
    return hits("extra-uid0", extra)


RULES = [
    Rule("empty-password", "account with an empty password", Severity.CRITICAL,
         "accounts have an empty password (anyone can log in)",
         "lock them (passwd -l USER) or set a password hash; use SSH keys injected at boot instead",
         check_empty),
    Rule("known-password", "account with a well-known password", Severity.CRITICAL,
         "accounts have a well-known password",
         "lock them (passwd -l USER) and let the target inject credentials at boot", check_known),
    Rule("extra-uid0", "extra uid-0 account", Severity.HIGH,
         "accounts other than root have uid 0",
         "give them their own uid, or remove them; grant root through sudo instead", check_uid0),
]
