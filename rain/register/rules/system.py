"""System rules: world-writable files in system directories, setuid outside an allowlist,
package sources marked trusted or unsigned."""

from __future__ import annotations

import re
import stat

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity
from rain.register.rules import Rule, data_lines, hits

_SYSTEM_DIRS = ("/bin/", "/sbin/", "/lib/", "/lib64/", "/usr/", "/etc/", "/boot/", "/opt/", "/var/lib/")


def check_world_writable(root: RootFS) -> list[RawFinding]:
    found = []
    for e in root.entries:
        if stat.S_ISLNK(e.mode) or not e.rel.startswith(_SYSTEM_DIRS) or not e.mode & stat.S_IWOTH:
            continue
        if e.is_dir and e.mode & stat.S_ISVTX:
            continue  # sticky directories such as /var/tmp are meant to be shared
        found.append(e.rel)
    return hits("world-writable", found)


def _canonical(rel: str) -> str:
    """Merged-/usr images reach /bin through /usr/bin: compare both spellings as one."""
    for old in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if rel.startswith(old):
            return "/usr" + rel
    return rel


def check_setuid(root: RootFS) -> list[RawFinding]:
    allowed = {_canonical(p) for p in data_lines("setuid_allowlist.txt")}
    found = [e.rel for e in root.entries if e.is_file and e.mode & (stat.S_ISUID | stat.S_ISGID)
             and _canonical(e.rel) not in allowed]
    return hits("setuid-unlisted", found)


_LIST_TRUST = re.compile(r"\[[^\]]*\b(trusted|allow-insecure|allow-weak|allow-downgrade-to-insecure)=yes")
_DEB822_TRUST = re.compile(r"^(Trusted|Allow-Insecure|Allow-Weak|Allow-Downgrade-To-Insecure):\s*yes\s*$",
                           re.I | re.M)
_APT_CONF = re.compile(r"(AllowUnauthenticated|AllowInsecureRepositories|AllowWeakRepositories)"
                       r"\s*(\"|\s)\s*\"?(true|yes|1)\"?", re.I)
_GPGCHECK_OFF = re.compile(r"^\s*(gpgcheck|repo_gpgcheck)\s*=\s*(0|false|no)\s*$", re.I | re.M)


def check_sources(root: RootFS) -> list[RawFinding]:
    found = []
    lists = ["/etc/apt/sources.list"] + root.glob("/etc/apt/sources.list.d", "*.list")
    for path in lists:
        for line in (root.read_text(path) or "").splitlines():
            if line.lstrip().startswith("deb") and _LIST_TRUST.search(line):
                found.append(f"{path}:{line.strip()}")
    for path in root.glob("/etc/apt/sources.list.d", "*.sources"):
        found += [f"{path}:{m.group(0).strip()}" for m in _DEB822_TRUST.finditer(root.read_text(path) or "")]
    for path in ["/etc/apt/apt.conf"] + root.glob("/etc/apt/apt.conf.d", "*"):
        found += [f"{path}:{m.group(1)}" for m in _APT_CONF.finditer(root.read_text(path) or "")]
    for path in root.glob("/etc/yum.repos.d", "*.repo") + ["/etc/dnf/dnf.conf", "/etc/yum.conf"]:
        found += [f"{path}:{m.group(0).strip()}" for m in _GPGCHECK_OFF.finditer(root.read_text(path) or "")]
    return hits("unsigned-sources", found)


RULES = [
    Rule("world-writable", "world-writable files in system directories", Severity.HIGH,
         "system files or directories are world-writable",
         "chmod o-w them (directories meant to be shared need the sticky bit, chmod +t)",
         check_world_writable),
    Rule("setuid-unlisted", "setuid/setgid binaries outside the allowlist", Severity.MEDIUM,
         "setuid/setgid binaries outside the allowlist",
         "chmod u-s,g-s them, or ask an admin to accept the rule for this image if they are needed",
         check_setuid),
    Rule("unsigned-sources", "package sources marked trusted or unsigned", Severity.HIGH,
         "package sources skip signature checks",
         "remove trusted=yes / allow-insecure / gpgcheck=0 and install the repository's signing key",
         check_sources),
]
