"""Bare-metal HPC: kernel + Rain's initrd boot the image's root from a squashfs fetched over HTTP.

Publishing copies vmlinuz, initrd.img and rootfs.squashfs into the site's
provisioning directory (served to the nodes at `http_url`) and writes beside
them an iPXE script, a PXELINUX entry, an xCAT osimage definition and a
Warewulf-style image description.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import ClassVar, Literal

from rain.config import Settings
from rain.errors import TargetError
from rain.image.formats import make_squashfs
from rain.image.rootfs import RootFS
from rain.image.sysprep import generalize
from rain.register import adapt, boot, initrd
from rain.register.chroot import Sandbox
from rain.register.models import Label, Packed, Severity, VetPolicy
from rain.register.targets.base import SiteSettings, TargetName

log = logging.getLogger(__name__)
MARKER = "RAIN-BOOT-MARKER reached multi-user.target"


class HpcSite(SiteSettings):
    provision_dir: Path
    """Where published images go: one sub-directory per image (served over HTTP to the nodes)."""
    http_url: str
    """URL under which the nodes see provision_dir, e.g. http://head.cluster:8080/rain."""
    pxe_dir: Path | None = None
    """PXELINUX config directory (pxelinux.cfg); unset = provision_dir/pxelinux.cfg."""
    console: str = "ttyS0,115200"
    kernel_args: str = ""
    accel: str = "tcg"
    """QEMU accelerator for --boot-test: tcg works everywhere; kvm where /dev/kvm works."""
    nodes: Literal["qemu"] | None = None
    """`fg-image launch`: where the site's nodes are. `qemu`: QEMU nodes on this host that netboot by PXE and
    iPXE; Rain serves provision_dir at http_url, whose host must then be 10.0.2.2 (this host, as QEMU's
    user network shows it to a guest) and whose port is the one Rain listens on, on 127.0.0.1."""


class HpcTarget:
    name: ClassVar[TargetName] = TargetName.HPC
    vet_policy: ClassVar[VetPolicy] = VetPolicy("bare-metal", Severity.MEDIUM, frozenset({"kernel"}))
    derived_format: ClassVar[str] = "squashfs"
    site_model: ClassVar[type[HpcSite]] = HpcSite
    login_user: ClassVar[str] = "root"
    """Provisioned nodes: the site's own provisioning (xCAT, Warewulf) puts root's keys in place."""

    def __init__(self, site: HpcSite, site_name: str, settings: Settings, offline: bool = False) -> None:
        self.site, self.site_name, self.settings = site, site_name, settings

    def adapt(self, root: Path, sandbox: Sandbox | None = None) -> list[str]:
        """No image code runs: everything here is Rain's own file edits (`sandbox` is unused)."""
        tree_changes = generalize(root)
        RootFS(root).write_text("/etc/fstab", "# root: Rain's read-only squashfs under a tmpfs overlay\n")
        tree_changes.append("/etc/fstab emptied (root is the squashfs+tmpfs overlay set up by the initrd)")
        tree_changes += adapt.serial_console(root)
        tree_changes += adapt.boot_marker(root, MARKER)
        return tree_changes

    def pack(self, root: Path, out: Path) -> Packed:
        out.mkdir(parents=True, exist_ok=True)
        kernel, kver = initrd.copy_kernel(root, out / "vmlinuz")
        files = {"vmlinuz": kernel, "initrd.img": initrd.build_initrd(root, kver, out / "initrd.img"),
                 "rootfs.squashfs": make_squashfs(root, out / "rootfs.squashfs", level=3)}
        return Packed(out, files, "rootfs.squashfs", "squashfs")

    def kernel_cmdline(self, root_url: str, extra: str = "") -> str:
        return " ".join(x for x in (f"console={self.site.console}", f"rain.root={root_url}",
                                    "panic=30", self.site.kernel_args, extra) if x)

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None:
        with boot.serve_directory(packed.directory) as port:
            url = f"http://{boot.GUEST_HOST}:{port}/rootfs.squashfs"
            seconds = boot.boot_until(packed.files["vmlinuz"], packed.files["initrd.img"],
                                      self.kernel_cmdline(url), log_path, MARKER, timeout,
                                      accel=self.site.accel)
        log.info("boot test reached the marker in %.0fs (console log %s)", seconds, log_path)

    def _pxe_dir(self) -> Path:
        return self.site.pxe_dir or self.site.provision_dir / "pxelinux.cfg"

    def publish(self, packed: Packed, label: Label) -> str:
        dest = self.site.provision_dir / label.slug
        try:
            dest.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise TargetError(f"{dest} already exists on the hpc site {self.site_name}",
                              hint=f"deregister the earlier registration first (fg-image deregister {label.image_id} "
                                   "--target hpc)") from None
        except OSError as e:
            raise TargetError(f"cannot write to the provisioning directory {dest}: {e.strerror}",
                              hint="check provision_dir in the targets file and its permissions") from e
        try:
            for name, path in packed.files.items():
                shutil.copyfile(path, dest / name)
            self._describe(dest, label)
        except OSError as e:
            self.delete(label.slug)
            raise TargetError(f"publishing to {dest} failed: {e}", hint="check free space and permissions") from e
        return label.slug

    def _describe(self, dest: Path, label: Label) -> None:
        base = f"{self.site.http_url.rstrip('/')}/{label.slug}"
        args = self.kernel_cmdline(f"{base}/rootfs.squashfs")
        # ${rain-args}: what a chaining script adds (a launch's seed); empty when nothing set it
        (dest / "boot.ipxe").write_text(f"#!ipxe\n# {label.name} ({label.image_id}), registered by Rain\n"
                                        f"kernel {base}/vmlinuz initrd=initrd.img {args} ${{rain-args}}\n"
                                        f"initrd {base}/initrd.img\nboot\n")
        pxe = (f"# {label.name} ({label.image_id}), registered by Rain\nLABEL {label.slug}\n"
               f"  KERNEL {base}/vmlinuz\n  INITRD {base}/initrd.img\n  APPEND {args}\n")
        (dest / "pxelinux.entry").write_text(pxe)
        self._pxe_dir().mkdir(parents=True, exist_ok=True)
        (self._pxe_dir() / label.slug).write_text(pxe)
        (dest / "xcat-osimage.stanza").write_text(
            f"{label.slug}:\n    objtype=osimage\n    imagetype=linux\n    provmethod=netboot\n"
            f"    profile=compute\n    osname=Linux\n    osvers={label.os_family}{label.os_release}\n"
            f"    osarch={label.arch}\n    kernel={dest}/vmlinuz\n    initrd={dest}/initrd.img\n"
            f"    rootimgdir={dest}\n    addkcmdline={args}\n")
        (dest / "warewulf-image.yaml").write_text(
            f"# Warewulf-style image description written by Rain\nname: {label.slug}\n"
            f"source_image: {label.image_id}\nos: {{family: {label.os_family or 'unknown'}, "
            f"release: '{label.os_release}', arch: {label.arch}}}\nkernel: {base}/vmlinuz\n"
            f"initrd: {base}/initrd.img\nrootfs: {{url: {base}/rootfs.squashfs, type: squashfs, overlay: tmpfs}}\n"
            f"kernel_args: \"{args}\"\n")

    def delete(self, remote_id: str) -> None:
        if "/" in remote_id or remote_id in ("", ".", ".."):
            raise TargetError(f"bad hpc remote id {remote_id!r}")
        shutil.rmtree(self.site.provision_dir / remote_id, ignore_errors=True)
        (self._pxe_dir() / remote_id).unlink(missing_ok=True)
