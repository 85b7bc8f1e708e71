"""Host tools: the plain programs Rain runs (mkfs, sfdisk, qemu-img, grub-mkimage, ...) and facts about processes.

Tools are found on PATH or the system directories and run as argv lists. A
missing tool is a ToolMissing naming the Debian package that provides it; a
failure is a Rain error naming the tool and the last lines it printed.
rain.host.command builds its cancellable runner on top of this module;
the repository uses pid_alive to tell a live server or lock holder from a dead one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from rain.errors import BuildError, ToolMissing

_APT = {"qemu-img": "qemu-utils", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
        "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "sfdisk": "fdisk", "zstd": "zstd", "tar": "tar",
        "dnf": "dnf", "yum": "yum", "rpm": "rpm", "rpmbuild": "rpm", "createrepo_c": "createrepo-c",
        "dpkg-query": "dpkg", "mount": "mount", "umount": "mount", "chroot": "coreutils",
        "qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static",
        "grub-mkimage": "grub-pc-bin", "grub-bios-setup": "grub-pc-bin", "mkfs.vfat": "dosfstools",
        "mmd": "mtools", "mcopy": "mtools", "xorriso": "xorriso", "unshare": "util-linux"}
# the system directories whatever PATH the caller has, and grub-bios-setup's (beside GRUB's modules on Debian)
_EXTRA_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/grub/i386-pc"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_EXTRA_PATH)
    if not found:
        raise ToolMissing(f"{name} is not installed", hint=f"install it: apt-get install {_APT.get(name, name)} "
                          "(or run scripts/setup.sh)")
    return found


def run(argv: list[str], what: str, error: type[Exception] = BuildError, input: bytes | None = None,
        timeout: float | None = None, env: Mapping[str, str] | None = None) -> str:
    """argv's output; `env` is added to this process's environment."""
    argv = [tool(argv[0]), *argv[1:]]
    try:
        proc = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired as e:
        raise error(f"{what}: {os.path.basename(argv[0])} took longer than {timeout}s") from e
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise error(f"{what}: {os.path.basename(argv[0])} failed (exit {proc.returncode}): {tail}")
    return proc.stdout.decode(errors="replace")


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
