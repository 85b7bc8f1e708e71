"""Account rules: empty or well-known passwords, extra uid-0 accounts."""

from __future__ import annotations

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
    weak = data_lines("weak_passwords.txt")
    bad = []
    for user, pw in _shadow(root).items():
        if not pw or pw.startswith(_LOCKED_PREFIXES) or pw == "x":
            continue
        if any(_matches(w, pw) for w in weak + [user]):
            bad.append(f"/etc/shadow:{user}")
    return hits("known-password", bad)


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
