"""Extended attributes from a tar stream: which ones an unpacked image keeps, within what bounds.

GNU tar --xattrs stores each attribute as a pax record `SCHILY.xattr.NAME=VALUE`
(the value is raw bytes; '=' and '%' in NAME are escaped as %3D and %25).
tarfile hands the records over in pax_headers as text decoded with
surrogateescape, so the exact bytes come back with encode(..., "surrogateescape").

Kept, because the image's own system reads them:
  security.capability  file capabilities: Debian's ping has cap_net_raw=ep instead
                       of setuid root; without it ping fails for every user but root.
  user.*               plain user metadata (no privilege attached to it).
  system.posix_acl_access, system.posix_acl_default
                       POSIX ACLs (systemd's tmpfiles gives /var/log/journal
                       some); they only refine rwx bits the owner of the image
                       already sets, never a setuid bit, and the kernel checks them.
Never taken from an image, whoever made it:
  security.selinux, security.SMACK64*, security.ima/evm (labels and signatures
  decide what a process may do under the policy of the machine that boots the
  image; a distribution relabels at first boot, and an uploaded label would
  otherwise pick its own domain), trusted.* (read by host services running as
  root: trusted.overlay.redirect/metacopy would steer a later overlay mount of
  this tree), and the rest of system.* (NFSv4 ACLs, not an image's to set).
What is not kept, or cannot be set here, becomes one "xattr-dropped" finding.
"""

from __future__ import annotations

import os
import re
import tarfile

from rain.image import limits
from rain.image.findings import RawFinding, Severity
from rain.sizes import human

PAX_PREFIX = "SCHILY.xattr."
CAPABILITY = "security.capability"
KEPT_EXACT = frozenset({CAPABILITY, "system.posix_acl_access", "system.posix_acl_default"})
SHOWN = 20
"""Paths listed in a finding; the rest are counted (an SELinux-labelled image has a label on every file)."""
_ESCAPED = re.compile(r"%(3D|25)", re.IGNORECASE)

Pairs = tuple[tuple[str, bytes], ...]


def of(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """Every attribute the member's pax headers carry, as (name, exact value bytes)."""
    return [(_unescape(key[len(PAX_PREFIX):]), value.encode("utf-8", "surrogateescape"))
            for key, value in m.pax_headers.items() if key.startswith(PAX_PREFIX)]


def kept(name: str) -> bool:
    return name in KEPT_EXACT or (name.startswith("user.") and len(name) > len("user."))


def _unescape(name: str) -> str:
    return _ESCAPED.sub(lambda match: "=" if match.group(1).upper() == "3D" else "%", name)


class Keeper:
    """Decides per entry what is kept (charging the budget before anything is written), sets it on the
    entry's own descriptor, and collects what was dropped for one finding per severity."""

    def __init__(self, budget: limits.Budget) -> None:
        self.budget = budget
        self._dropped: dict[Severity | None, list[str]] = {}
        self._counts: dict[Severity | None, int] = {}

    def plan(self, m: tarfile.TarInfo, norm: str) -> Pairs:
        found = of(m)
        if not found:
            return ()
        keep: list[tuple[str, bytes]] = []
        for name, value in found:
            if kept(name):
                keep.append((name, value))
            else:
                self.drop(norm, name, "never taken from an image", Severity.INFO)
        size = sum(len(os.fsencode(name)) + len(value) for name, value in keep)
        if len(keep) > limits.MAX_ENTRY_XATTRS or size > limits.MAX_ENTRY_XATTR_BYTES:
            self.drop(norm, f"{len(keep)} attributes of {human(size)}", f"more than {limits.MAX_ENTRY_XATTRS} or "
                      f"{human(limits.MAX_ENTRY_XATTR_BYTES)} on one entry")
            return ()
        self.budget.xattrs(size)
        return tuple(keep)

    def apply(self, fd: int, norm: str, pairs: Pairs, owned: bool) -> None:
        """Set on the open entry, after its owner (chown clears security.capability). Like a setuid bit,
        a capability is not left on a file whose owner could not be set."""
        for name, value in pairs:
            if name == CAPABILITY and not owned:
                self.drop(norm, name, "its owner could not be set")
                continue
            try:
                os.setxattr(fd, name, value)
            except (OSError, ValueError) as e:
                self.drop(norm, name, getattr(e, "strerror", None) or str(e))

    def refuse(self, norm: str, pairs: Pairs, why: str) -> None:
        for name, _ in pairs:
            self.drop(norm, name, why, Severity.INFO)

    def drop(self, norm: str, name: str, why: str, severity: Severity | None = None) -> None:
        self._counts[severity] = self._counts.get(severity, 0) + 1
        shown = self._dropped.setdefault(severity, [])
        if len(shown) < SHOWN:
            shown.append(f"/{'' if norm == '.' else norm} ({name!r}: {why})")

    def findings(self) -> list[RawFinding]:
        out = []
        for severity, paths in self._dropped.items():
            more = self._counts[severity] - len(paths)
            out.append(RawFinding("xattr-dropped", tuple(paths) + ((f"... and {more} more",) if more else ()),
                                  severity=severity))
        return out
