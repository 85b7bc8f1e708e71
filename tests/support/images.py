"""Image files for the tests: small fake trees and archives to make, and the files of a built image to read.

The clean tree looks like a Debian root to the rules (accounts, sshd config,
a kernel file and modules lists) but holds no real binaries, so unit and
contract tests stay fast; e2e tests use the real mmdebstrap-built image
(built_images.py) and read it with tar_names, tar_read and manifest.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import zstandard

KVER = "6.1.0-test-amd64"
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
               "-----END OPENSSH PRIVATE KEY-----\n")


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def make_tree(root: Path, kernel: bool = True, cloud: bool = True) -> Path:
    """A clean, vettable root tree; `cloud`: it has what contextualization needs (stubs of cloud-init,
    growpart, ifup and dhclient), so register's adapt writes configuration and installs nothing."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc/ssh", "root", "home", "tmp", "var/tmp", "boot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        if not (root / link).is_symlink():
            os.symlink(target, root / link)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    _write(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
           "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
           "alice:x:1000:1000::/home/alice:/bin/bash\n")
    _write(root, "/etc/shadow", "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
           "alice:!:19000:0:99999:7:::\n", 0o640)
    _write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n"
           "#PermitRootLogin prohibit-password\nKbdInteractiveAuthentication no\n")
    _write(root, "/etc/apt/sources.list.d/debian.sources",
           "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n")
    _write(root, "/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    _write(root, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    _write(root, "/usr/bin/su", "#!/bin/sh\n", 0o4755)
    _write(root, "/usr/bin/sh", "#!/bin/sh\n", 0o755)
    if cloud:
        for tool in ("/usr/bin/cloud-init", "/usr/bin/growpart", "/usr/sbin/ifup", "/usr/sbin/dhclient"):
            _write(root, tool, "#!/bin/sh\n", 0o755)
    if kernel:
        _write(root, f"/boot/vmlinuz-{KVER}", "not really a kernel\n")
        _write(root, f"/boot/initrd.img-{KVER}", "not really an initramfs\n")  # a cloud disk's loader entry needs one
        _write(root, f"/lib/modules/{KVER}/modules.dep",
               "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n"
               "kernel/drivers/net/ethernet/amazon/ena/ena.ko:\n")
        _write(root, f"/lib/modules/{KVER}/modules.builtin", "kernel/fs/ext4/ext4.ko\n")
    return root


def make_bad_tree(root: Path) -> Path:
    """The acceptance test's bad image (besides the archive escape): empty root password,
    baked SSH host keys, a private key under /root/.ssh."""
    make_tree(root)
    _write(root, "/etc/shadow", "root::19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", 0o640)
    _write(root, "/etc/ssh/ssh_host_ed25519_key", PRIVATE_KEY, 0o600)
    _write(root, "/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA root@build\n")
    _write(root, "/root/.ssh/id_ed25519", PRIVATE_KEY, 0o600)
    return root


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data))


def make_tarball(root: Path, out: Path, escape: bool = False, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """tar.zst of `root` (members named ./...), optionally with a '../../etc/x' member and extras."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(root, arcname=".")
        if escape:
            _add_bytes(tf, "../../etc/x", b"escaped\n", mode=0o644)
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    out.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return out


def cpio(*names: str, body: bytes = b"x") -> bytes:
    """A newc cpio archive (as in an initramfs) of regular files `names`, each holding `body`."""
    out = io.BytesIO()
    for ino, name in enumerate((*names, "TRAILER!!!"), start=1):
        data = b"" if name == "TRAILER!!!" else body
        nameb = name.encode() + b"\0"
        fields = (ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0)
        out.write(("070701" + "".join(f"{v:08x}" for v in fields)).encode() + nameb)
        out.write(b"\0" * (-(110 + len(nameb)) % 4) + data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def tar_names(archive: Path) -> set[str]:
    """The member names of a tar.zst, without their leading './'."""
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as tar:
        return {m.name.removeprefix("./") for m in tar}


def tar_read(archive: Path, name: str) -> bytes:
    """The content of member `name` (without './') of a tar.zst; fails the test if it is not there."""
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as tar:
        for m in tar:
            if m.name.removeprefix("./") == name:
                f = tar.extractfile(m)
                assert f is not None
                return f.read()
    raise AssertionError(f"{name} not in {archive}")


def manifest(directory: Path) -> dict[str, Any]:
    """The manifest.json that `fg-image generate -o directory` wrote."""
    return json.loads((directory / "manifest.json").read_text())
