"""Rain's small network-root initrd for bare metal: busybox, the image's own kernel modules, an /init.

The /init (templates in targets/data) brings up the network, fetches the
image's rootfs.squashfs over HTTP, mounts it read-only with a tmpfs overlay
and switch_roots into it, so the nodes boot exactly the vetted image.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import stat
from importlib import resources
from pathlib import Path

import jinja2

from rain.errors import BuildError, InvalidInput, ToolMissing
from rain.image.rootfs import RootFS

# Drivers the initrd tries (those the kernel has as modules; built-ins need nothing).
WANTED = ("virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "ixgbe", "tg3", "bnx2", "r8169",
          "loop", "squashfs", "overlay")
APPLETS = ("sh", "mount", "umount", "mkdir", "insmod", "ip", "udhcpc", "wget", "switch_root", "cat",
           "echo", "ls", "grep", "cut", "sleep", "tar", "rm")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
MAX_MODULE = 64 << 20  # the largest .ko in a Debian kernel is a few MB; a bigger one is not a module
MAX_MODULES_TOTAL = 256 << 20
MAX_KERNEL = 256 << 20
_MODULE_NAME = re.compile(r"[A-Za-z0-9_+,.-]+(/[A-Za-z0-9_+,.-]+)*\.ko(\.(xz|zst|gz))?")
log = logging.getLogger(__name__)


def _busybox() -> Path:
    for p in BUSYBOX_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise ToolMissing("busybox is not installed", hint="apt-get install busybox-static (or run scripts/setup.sh)")


def module_order(root: Path, kver: str, wanted: tuple[str, ...] = WANTED) -> list[str]:
    """Paths (relative to /lib/modules/KVER) of the wanted modules and their dependencies, deps first."""
    tree = RootFS(root)
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (tree.read_text(f"/lib/modules/{kver}/modules.dep", limit=32 << 20) or "").splitlines():
        mod, _, rest = line.partition(":")
        if not _plain_module(mod):
            continue
        deps[mod] = [d for d in rest.split() if _plain_module(d)]
        by_name[os.path.basename(mod).split(".ko")[0].replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return order


def _plain_module(name: str) -> bool:
    """A module path as depmod writes it: relative, no '..', characters that are safe in /init's insmod lines."""
    if _MODULE_NAME.fullmatch(name) and ".." not in name.split("/"):
        return True
    if name:
        log.warning("initrd: skipping %r from modules.dep (not a plain module path)", name)
    return False


def newest_kernel(root: Path) -> tuple[str, str]:
    """The newest /boot/vmlinuz-* (as a path inside the image) and its version."""
    kernels = sorted(RootFS(root).kernels())
    if not kernels:
        raise BuildError("the image has no kernel in /boot", hint="install a kernel package in the recipe")
    return kernels[-1], kernels[-1].rsplit("vmlinuz-", 1)[1]


def _render(name: str, **values: object) -> str:
    text = resources.files("rain.register.targets").joinpath("data").joinpath(name).read_text()
    return jinja2.Template(text, keep_trailing_newline=True).render(**values)


def build_initrd(root: Path, kver: str, out: Path) -> Path:
    """A gzip-compressed newc cpio: /init, busybox and its applet links, the needed modules."""
    tree = RootFS(root)
    modules = module_order(root, kver)
    entries: list[tuple[str, int, bytes | None, str | None]] = []  # name, mode, data, link
    for d in ("bin", "dev", "proc", "sys", "run", "newroot", "etc", "lib", "lib/modules"):
        entries.append((d, stat.S_IFDIR | 0o755, None, None))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, _busybox().read_bytes(), None))
    entries += [(f"bin/{a}", stat.S_IFLNK | 0o777, None, "busybox") for a in APPLETS]
    entries.append(("init", stat.S_IFREG | 0o755, _render("hpc-init.j2", modules=modules).encode(), None))
    entries.append(("bin/udhcpc.script", stat.S_IFREG | 0o755, _render("udhcpc.j2").encode(), None))
    made: set[str] = set()
    total = 0
    for mod in modules:
        parent = "lib/modules"
        for part in os.path.dirname(mod).split("/"):
            parent = f"{parent}/{part}"
            if parent not in made:
                made.add(parent)
                entries.append((parent, stat.S_IFDIR | 0o755, None, None))
        blob = tree.read_file(f"/lib/modules/{kver}/{mod}", MAX_MODULE)  # regular, bounded, inside the root
        total += len(blob)
        if total > MAX_MODULES_TOTAL:
            raise InvalidInput(f"the modules the initrd needs from /lib/modules/{kver} exceed "
                               f"{MAX_MODULES_TOTAL >> 20} MiB (at {mod})",
                               hint="the image's kernel modules are damaged; reinstall the kernel package")
        entries.append((f"lib/modules/{mod}", stat.S_IFREG | 0o644, blob, None))
    _write_cpio(entries, out)
    return out


def _write_cpio(entries: list[tuple[str, int, bytes | None, str | None]], out: Path) -> None:
    """Written beside `out` and renamed into place, so a failure leaves no half initrd."""
    part = out.with_name(out.name + ".part")
    try:
        with gzip.open(part, "wb", compresslevel=6) as f:
            for ino, (name, mode, data, link) in enumerate(entries, start=1):
                body = link.encode() if link is not None else (data or b"")
                _cpio_entry(f, ino, name, mode, body)
            _cpio_entry(f, 0, "TRAILER!!!", 0, b"")
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def _cpio_entry(f, ino: int, name: str, mode: int, body: bytes) -> None:
    nameb = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    header = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, nlink, 0, len(body), 0, 0, 0, 0,
                                                      len(nameb), 0))
    f.write(header.encode() + nameb)
    f.write(b"\0" * (-(110 + len(nameb)) % 4))
    f.write(body)
    f.write(b"\0" * (-len(body) % 4))


def copy_kernel(root: Path, out: Path) -> tuple[Path, str]:
    """The image's newest kernel, read like any image file: regular, inside the root, bounded."""
    kernel, kver = newest_kernel(root)
    out.write_bytes(RootFS(root).read_file(kernel, MAX_KERNEL))
    return out, kver
