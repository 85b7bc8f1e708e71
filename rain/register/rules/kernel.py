"""Kernel rules, turned on by targets that boot the image's own kernel."""

from __future__ import annotations

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity
from rain.register.rules import Rule, hits

NVME_ENA = ("nvme", "ena")


def check_kernel(root: RootFS) -> list[RawFinding]:
    if root.kernels() and root.module_dirs():
        return []
    return [RawFinding("kernel-missing", ("/boot/vmlinuz-*",))]


def has_driver(root: RootFS, kdir: str, name: str) -> bool:
    builtin = root.read_text(f"{kdir}/modules.builtin") or ""
    if any(line.rsplit("/", 1)[-1] in (f"{name}.ko",) for line in builtin.splitlines()):
        return True
    dep = root.read_text(f"{kdir}/modules.dep", limit=16 << 20) or ""
    return any(line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko")[0] == name for line in dep.splitlines())


def check_nvme_ena(root: RootFS) -> list[RawFinding]:
    kdirs = root.module_dirs()
    if not kdirs:
        return []  # kernel-missing reports it
    missing = [f"{kdir}:{name}" for kdir in kdirs for name in NVME_ENA if not has_driver(root, kdir, name)]
    return hits("kernel-nvme-ena", missing)


RULES = [
    Rule("kernel-missing", "no kernel where the target boots the image's own", Severity.HIGH,
         "the image has no kernel (/boot/vmlinuz-*) or no modules (/lib/modules)",
         "install a kernel package in the recipe (e.g. linux-image-amd64)", check_kernel, group="kernel"),
    Rule("kernel-nvme-ena", "kernel lacks NVMe or ENA drivers", Severity.HIGH,
         "the kernel lacks the NVMe or ENA driver EC2 instances need",
         "install a kernel with nvme and ena (Debian's linux-image-amd64 or linux-image-cloud-amd64)",
         check_nvme_ena, group="nvme_ena"),
]
