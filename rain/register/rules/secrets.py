"""Secret rules: private keys, credential files (SSH, cloud, .netrc), shell histories."""

from __future__ import annotations

import fnmatch
import re

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity
from rain.register.rules import Rule, data_lines, hits

_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_SCAN_DIRS = ("/root/", "/home/", "/etc/", "/opt/", "/srv/", "/usr/local/", "/var/lib/")
_MAX_SCAN = 256 * 1024


def _is_host_key(rel: str) -> bool:  # ssh-host-keys reports these
    return fnmatch.fnmatch(rel, "/etc/ssh/ssh_host_*_key")


def check_private_keys(root: RootFS) -> list[RawFinding]:
    found = []
    for e in root.entries:
        wanted = e.is_file and 0 < e.size <= _MAX_SCAN and e.rel.startswith(_SCAN_DIRS)
        if not wanted or _is_host_key(e.rel):
            continue
        if _KEY.search(root.read_bytes(e.rel, _MAX_SCAN) or b""):  # regular files only, never a FIFO
            found.append(e.rel)
    return hits("private-keys", found)


def _homes(root: RootFS) -> list[str]:
    return ["/root"] + root.glob("/home", "*")


def _match_in_homes(root: RootFS, patterns: list[str]) -> list[str]:
    found = []
    for e in root.entries:
        if not e.is_file or e.size == 0:
            continue
        for home in _homes(root):
            if e.rel.startswith(home + "/") and any(
                    fnmatch.fnmatch(e.rel[len(home) + 1:], p) for p in patterns):
                found.append(e.rel)
                break
    return found


def check_credentials(root: RootFS) -> list[RawFinding]:
    patterns = data_lines("credential_files.txt")
    home_patterns = [p for p in patterns if not p.startswith("/")]
    system = [e.rel for e in root.entries if e.is_file and e.size > 0
              and any(fnmatch.fnmatch(e.rel, p) for p in patterns if p.startswith("/"))]
    return hits("credential-files", sorted(set(_match_in_homes(root, home_patterns) + system)))


def check_histories(root: RootFS) -> list[RawFinding]:
    return hits("shell-history", _match_in_homes(root, data_lines("history_files.txt")))


RULES = [
    Rule("private-keys", "private keys in the image", Severity.CRITICAL,
         "private keys are stored in the image",
         "remove them and hand keys to instances at boot (cloud-init, a secret store)", check_private_keys),
    Rule("credential-files", "credential files in the image", Severity.HIGH,
         "credential files (SSH, cloud, .netrc) are stored in the image",
         "remove them; pass credentials to running instances instead of baking them in", check_credentials),
    Rule("shell-history", "shell histories in the image", Severity.MEDIUM,
         "shell histories are stored in the image (they often hold secrets)",
         "remove ~/.*_history files before uploading (e.g. history -c; rm ~/.bash_history)", check_histories),
]
