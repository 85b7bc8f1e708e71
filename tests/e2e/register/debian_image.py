"""Builds (once, cached) a small Debian bookworm rootfs tarball with a kernel and systemd.

Stands in for the generate stage's minimal Debian recipe. The mirror is never
named here: mmdebstrap is handed the host's own deb822 sources files, read at
run time from /etc/apt/sources.list.d/*.sources (or /etc/apt/sources.list).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

PACKAGES = ["systemd-sysv", "linux-image-amd64", "kmod", "openssh-client"]
NODOC = ["path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*",
         "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*"]


def cache_dir() -> Path:
    base = os.environ.get("RAIN_TEST_CACHE") or str(Path.home() / ".cache" / "rain-tests")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_sources() -> list[str]:
    """The host's apt sources, as files mmdebstrap reads itself (never a host name in code)."""
    found = sorted(str(p) for p in Path("/etc/apt/sources.list.d").glob("*.sources"))
    if not found and Path("/etc/apt/sources.list").is_file():
        found = ["/etc/apt/sources.list"]
    if not found:
        raise RuntimeError("no apt sources on this host: cannot build the Debian test image")
    return found


def build_debian_tarball(release: str = "bookworm") -> Path:
    """Path to a cached rootfs tar.zst with kernel + systemd, built with mmdebstrap on first use."""
    out = cache_dir() / f"debian-{release}-kernel.tar.zst"
    lock = cache_dir() / f".{out.name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if out.is_file() and out.stat().st_size > 0:
            return out
        tmp = out.with_suffix(".part.tar.zst")
        argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                *[f"--dpkgopt={o}" for o in NODOC], release, str(tmp), *host_sources()]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
        tmp.rename(out)
        return out


if __name__ == "__main__":
    print(build_debian_tarball())
