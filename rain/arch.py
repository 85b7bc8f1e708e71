"""Architectures: one enum, and every name each tool and cloud uses for it.

Rain accepts both Debian's and the kernel's/RPM's spelling in a recipe
(amd64 or x86_64, arm64 or aarch64, ppc64el or ppc64le, s390x) and stores the
image family's own spelling (`.deb` for Debian/Ubuntu, `.rpm` for the RHEL
family). Translations live here only: code asks a member for `.deb`, `.rpm`,
`.cloud` (the name EC2-style metadata and Glance use), `.qemu` (the system
emulator) instead of keeping its own table.
"""

from __future__ import annotations

import platform
from enum import StrEnum

from rain.errors import InvalidInput


class Architecture(StrEnum):
    """A CPU architecture; the value is the kernel's name (uname -m)."""

    X86_64 = "x86_64"
    ARM64 = "aarch64"
    PPC64LE = "ppc64le"
    S390X = "s390x"

    @property
    def deb(self) -> str:
        """Debian's and Ubuntu's name (dpkg --print-architecture)."""
        return _DEB[self]

    @property
    def rpm(self) -> str:
        """The RHEL family's name (rpm, dnf --forcearch): the kernel's."""
        return self.value

    @property
    def cloud(self) -> str:
        """The name image metadata on the clouds uses (Glance's architecture, Rain's labels)."""
        return self.value

    @property
    def qemu(self) -> str:
        """The QEMU system emulator for this architecture."""
        return f"qemu-system-{_QEMU[self]}"

    @classmethod
    def lookup(cls, name: str) -> Architecture | None:
        """The architecture a Debian or kernel/RPM name means; None if Rain does not know it."""
        return _BY_NAME.get(name)

    @classmethod
    def from_uname(cls, machine: str) -> Architecture | None:
        """The architecture `uname -m` reports as `machine`; None if Rain does not know it."""
        try:
            return cls(machine)
        except ValueError:
            return None

    @classmethod
    def native(cls) -> Architecture:
        """This host's architecture."""
        host = cls.from_uname(platform.machine())
        if host is None:
            raise InvalidInput(f"this host's architecture {platform.machine()} is not one Rain knows",
                               hint="run Rain on " + ", ".join(a.value for a in cls))
        return host


_DEB = {Architecture.X86_64: "amd64", Architecture.ARM64: "arm64", Architecture.PPC64LE: "ppc64el",
        Architecture.S390X: "s390x"}
_QEMU = {Architecture.X86_64: "x86_64", Architecture.ARM64: "aarch64", Architecture.PPC64LE: "ppc64",
         Architecture.S390X: "s390x"}
_BY_NAME = {**{a.deb: a for a in Architecture}, **{a.rpm: a for a in Architecture}}
DEB_NAMES = tuple(a.deb for a in Architecture)
"""What recipe errors suggest: amd64, arm64, ppc64el, s390x."""
