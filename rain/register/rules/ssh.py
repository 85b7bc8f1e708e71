"""SSH rules: host keys baked in, root's authorized_keys, sshd permitting root or password login."""

from __future__ import annotations

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity
from rain.register.rules import Rule, hits


def check_host_keys(root: RootFS) -> list[RawFinding]:
    return hits("ssh-host-keys", root.glob("/etc/ssh", "ssh_host_*_key"))


def check_root_keys(root: RootFS) -> list[RawFinding]:
    found = [p for p in ("/root/.ssh/authorized_keys", "/root/.ssh/authorized_keys2")
             if (root.read_text(p) or "").strip()]
    return hits("root-authorized-keys", found)


MAX_INCLUDE_DEPTH = 16  # sshd's own limit (servconf.c SERVCONF_MAX_DEPTH): deeper, sshd refuses to start
MAX_CONFIG_FILES = 256  # files one vetting reads for sshd, however the Includes fan out


def sshd_options(root: RootFS) -> dict[str, tuple[str, str]]:
    """Effective sshd options (first value wins, as in sshd), with the file that set them.

    Includes are read where they stand, as sshd does; each file once (an image's config may include
    itself), no deeper than sshd goes, and no more than MAX_CONFIG_FILES files in all."""
    options: dict[str, tuple[str, str]] = {}
    _read_config(root, "/etc/ssh/sshd_config", 0, set(), options)
    return options


def _read_config(root: RootFS, path: str, depth: int, seen: set[str], options: dict[str, tuple[str, str]]) -> None:
    if path in seen or depth > MAX_INCLUDE_DEPTH or len(seen) >= MAX_CONFIG_FILES:
        return
    seen.add(path)
    for line in (root.read_text(path) or "").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        key, value = words[0].lower(), words[1].lower()
        if key == "match":
            return  # options inside Match blocks are conditional; the global ones came first
        if key == "include":
            for pattern in words[1:]:
                base = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                directory, _, glob = base.rpartition("/")
                for included in root.glob(directory or "/", glob):
                    _read_config(root, included, depth + 1, seen, options)
            continue
        options.setdefault(key, (value, path))


def check_root_login(root: RootFS) -> list[RawFinding]:
    value, path = sshd_options(root).get("permitrootlogin", ("", ""))
    return hits("sshd-root-login", [f"{path}:PermitRootLogin {value}"] if value == "yes" else [])


def check_password_login(root: RootFS) -> list[RawFinding]:
    options = sshd_options(root)
    found = [f"{p}:{k} yes" for k, (v, p) in options.items()
             if k in ("passwordauthentication", "permitemptypasswords") and v == "yes"]
    return hits("sshd-password-login", found)


RULES = [
    Rule("ssh-host-keys", "SSH host keys baked in", Severity.HIGH,
         "SSH host keys are baked into the image (every instance shares them)",
         "delete /etc/ssh/ssh_host_*_key* in the recipe's last step; registered copies make their own at first boot",
         check_host_keys),
    Rule("root-authorized-keys", "authorized_keys for root", Severity.HIGH,
         "root has authorized_keys baked in",
         "remove /root/.ssh/authorized_keys; let the target inject keys at boot (cloud-init, context)",
         check_root_keys),
    Rule("sshd-root-login", "sshd permits root login", Severity.HIGH,
         "sshd permits root login with a password",
         "set 'PermitRootLogin prohibit-password' (or 'no') in /etc/ssh/sshd_config", check_root_login),
    Rule("sshd-password-login", "sshd permits password login", Severity.MEDIUM,
         "sshd accepts passwords",
         "set 'PasswordAuthentication no' and 'PermitEmptyPasswords no' in /etc/ssh/sshd_config",
         check_password_login),
]
