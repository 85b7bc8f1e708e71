"""Adaptations more than one target makes to its copy of the image.

Each function changes the tree at `root` (a private copy) and returns what it
did as human-readable lines for the registration record and the docs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rain.errors import InvalidInput
from rain.image import initramfs
from rain.image.disk import ROOT_LABEL
from rain.image.rootfs import RootFS
from rain.image.sysprep import generalize
from rain.register import chroot
from rain.register.models import VetPolicy, VetReport
from rain.register.vet import VetRejected, vet_tree

MARKER_UNIT = "rain-boot-marker.service"
CONTEXT_TOOLS = {"cloud-init": ("/usr/bin/cloud-init",), "cloud-guest-utils": ("/usr/bin/growpart",)}
"""What contextualization needs, by package: cloud-init reads the cloud's metadata, growpart (run by
cloud-init's growpart module) grows the root partition to the disk at first boot."""
DHCP_CLIENTS = ("/sbin/dhclient", "/usr/sbin/dhclient", "/usr/sbin/dhcpcd", "/sbin/dhcpcd")
NETWORK_STACKS = ("/sbin/ifup", "/usr/sbin/ifup", "/usr/sbin/NetworkManager",
                  "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
INITRAMFS_MODULES = "/etc/initramfs-tools/modules"


@dataclass(frozen=True)
class CloudProfile:
    """What one cloud needs inside the image: where cloud-init finds the metadata, the drivers the
    first boot needs before the root is mounted, and who logs in with the key the cloud hands over."""

    target: str
    datasources: tuple[str, ...]
    login_user: str
    modules: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    """Further cloud-init settings (merged over the image's own /etc/cloud/cloud.cfg)."""


def cloud_disk(root: Path, profile: CloudProfile, sandbox: chroot.Sandbox) -> list[str]:
    """What every cloud target does to its copy: generic machine, root by label, contextualization
    (installed when the image lacks it), the cloud's drivers in the initramfs, serial console.

    Only installing packages and rebuilding an initramfs run the image's own programs, in `sandbox`
    (a builder VM by default); an image that has what the cloud needs runs none of its code."""
    done = generalize(root) + disk_fstab(root)
    wanted = missing_packages(root, profile.login_user)
    if wanted and "cloud-init" not in wanted and not _is_debian(root):
        done.append(f"not installed (RPM-family image): {', '.join(wanted)}; add them to the recipe")
        wanted = []
    done += _cloud_config(root, profile, installing="cloud-init" in wanted)
    tree = RootFS(root)
    rebuild: list[str] = []
    if profile.modules and tree.exists("/usr/sbin/update-initramfs"):
        done += modules_file(root, profile.modules)
        found, rebuild = initramfs_plan(root, profile.modules)
        done += found
    elif profile.modules:
        done.append(f"no initramfs-tools in the image: {', '.join(profile.modules)} not added to the initramfs "
                    "(the image's kernel must have them built in)")
    if wanted or rebuild:
        commands = [(["update-initramfs", "-u" if tree.exists(f"/boot/initrd.img-{k}") else "-c", "-k", k],
                     f"update-initramfs for {k}") for k in rebuild]
        added = chroot.run_in_image(sandbox, root, wanted, commands)
        done += chroot.added_lines(added, wanted)
        if rebuild:
            done.append(f"rebuilt the initramfs for {', '.join(rebuild)} (update-initramfs, in the "
                        f"{sandbox.name.value} sandbox)")
    return done + serial_console(root)


def _cloud_config(root: Path, profile: CloudProfile, installing: bool = False) -> list[str]:
    user = {"system_info": {"default_user": {"name": profile.login_user}}} if profile.login_user != "root" else {}
    return cloud_init(root, profile.target, list(profile.datasources), {**user, **profile.config}, installing)


def _is_debian(root: Path) -> bool:
    try:
        chroot.distro(root)
    except InvalidInput:
        return False
    return True


def missing_packages(root: Path, login_user: str = "root") -> list[str]:
    """The packages contextualization needs that the image lacks (cloud-init's network renderer for
    Debian is ifupdown's /etc/network/interfaces; its DHCP runs dhclient, also before the network is up;
    a login user other than root reaches root through the sudo rule cloud-init gives it)."""
    tree = RootFS(root)
    wanted = [pkg for pkg, paths in CONTEXT_TOOLS.items() if not any(tree.exists(p) for p in paths)]
    if not any(tree.exists(p) for p in NETWORK_STACKS):
        wanted.append("ifupdown")
    if not any(tree.exists(p) for p in DHCP_CLIENTS):
        wanted.append("isc-dhcp-client")
    if login_user != "root" and not any(tree.exists(p) for p in ("/usr/bin/sudo", "/bin/sudo")):
        wanted.append("sudo")
    return wanted


def modules_file(root: Path, modules: Sequence[str]) -> list[str]:
    """List the cloud's drivers in initramfs-tools' modules file, so every later initramfs has them too."""
    tree = RootFS(root)
    text = tree.read_text(INITRAMFS_MODULES) or ""
    have = {line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}
    add = [m for m in modules if m not in have]
    if not add:
        return []
    body = text if not text or text.endswith("\n") else text + "\n"
    tree.write_text(INITRAMFS_MODULES, body + "# added by Rain: drivers the cloud's first boot needs\n"
                    + "".join(m + "\n" for m in add))
    return [f"{INITRAMFS_MODULES}: added {' '.join(add)}"]


def initramfs_plan(root: Path, modules: Sequence[str]) -> tuple[list[str], list[str]]:
    """(lines, kernels): which kernels' initramfs must be rebuilt to load `modules` at first boot.

    Each initramfs is read (never run) to see whether it already has the drivers or the kernel has them
    built in (Debian's MODULES=most puts virtio, NVMe and ENA in every initramfs); one that lacks a driver
    the kernel has as a module, or cannot be read, or is missing, is rebuilt."""
    tree = RootFS(root)
    lines: list[str] = []
    rebuild: list[str] = []
    for kernel in sorted(tree.kernels()):
        version = kernel.rsplit("vmlinuz-", 1)[1]
        initrd = f"/boot/initrd.img-{version}"
        if not tree.exists(initrd):
            rebuild.append(version)
            continue
        missing = initramfs.missing_drivers(tree, version, initrd, modules)
        if missing is None:
            rebuild.append(version)
            continue
        absent = sorted(set(missing) - initramfs.available_modules(tree, version))
        if absent:
            lines.append(f"kernel {version} has no {', '.join(absent)} (neither built in nor a module): "
                         "the cloud may not see its disk or network; install a kernel that has them")
        if set(missing) - set(absent):
            rebuild.append(version)
        else:
            lines.append(f"the initramfs for {version} already loads {', '.join(m for m in modules if m not in absent)}"
                         " (not rebuilt)")
    return lines, rebuild


def vet_adapted(root: Path, subject: str, policy: VetPolicy, target: str,
                accepted: Sequence[str] = ()) -> VetReport:
    """Vet the adapted copy as the original was vetted: what adapt installed must pass the same rules.

    A failing copy stops the registration before anything is packed or published, with the same
    error (and exit code) as a failing original; returns the report when it passes."""
    report = vet_tree(root, f"{subject}, adapted for {target}", policy, target, (), accepted)
    if report.verdict != "pass":
        raise VetRejected(report, hint="the copy fails vetting after Rain adapted it for "
                                       f"{target}: add what the cloud needs to the recipe instead, or report it")
    return report


def disk_fstab(root: Path) -> list[str]:
    RootFS(root).write_text("/etc/fstab", f"# written by Rain for a single-disk image\n"
                                          f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
    return [f"/etc/fstab mounts the root by LABEL={ROOT_LABEL}"]


def cloud_init(root: Path, target: str, datasources: list[str], extra: dict | None = None,
               installing: bool = False) -> list[str]:
    """Point cloud-init at the target's datasource(s)."""
    tree = RootFS(root)
    config = {"datasource_list": datasources + ["None"], **(extra or {})}
    path = f"/etc/cloud/cloud.cfg.d/95-rain-{target}.cfg"  # after 90_dpkg.cfg, which would override it
    tree.write_text(path, "# written by Rain: datasources for " + target + "\n"
                    + yaml.safe_dump(config, sort_keys=False))
    done = [f"{path}: cloud-init datasource_list {', '.join(datasources)}"]
    if not installing and not tree.exists("/usr/bin/cloud-init"):
        done.append("cloud-init is not installed in the image: the datasource config waits for it "
                    "(add cloud-init to the recipe for keys and networking at boot)")
    return done


def serial_console(root: Path) -> list[str]:
    """Enable a login on the first serial port (cloud consoles and BMC serial-over-LAN show it)."""
    tree = RootFS(root)
    if not tree.exists("/lib/systemd/system/serial-getty@.service"):
        return []
    tree.symlink("/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
                 "/lib/systemd/system/serial-getty@.service")
    return ["enabled serial-getty@ttyS0 (console on the first serial port)"]


ONE_USERNAME = "/usr/lib/rain/one-username"
ONE_USERNAME_UNIT = "rain-one-username.service"
_ONE_USERNAME_SCRIPT = r"""#!/bin/sh
# written by Rain: OpenNebula's USERNAME context variable gets a login with the context's SSH keys, as
# OpenNebula's own context packages do (cloud-init reads SSH_PUBLIC_KEY and the network, not USERNAME)
set -eu
q() { cloud-init query "ds.meta_data.$1" 2>/dev/null || true; }
user=$(q USERNAME)
case "$user" in ""|root) exit 0 ;; esac
if ! printf '%s\n' "$user" | grep -Eqx '[a-z_][a-z0-9_-]{0,30}'; then
  echo "rain-one-username: USERNAME '$user' is not a valid login name; ignored" >&2
  exit 0
fi
getent passwd "$user" >/dev/null || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")
install -d -m 0700 -o "$user" -g "$group" "$home/.ssh"
q SSH_PUBLIC_KEY > "$home/.ssh/authorized_keys"
chown "$user:$group" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
if [ -d /etc/sudoers.d ]; then
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" > /etc/sudoers.d/90-rain-one-username
  chmod 0440 /etc/sudoers.d/90-rain-one-username
fi
echo "rain-one-username: $user can log in with the context's SSH keys"
"""


def one_username(root: Path) -> list[str]:
    """OpenNebula's USERNAME: a unit after cloud-init that makes that login with the context's SSH keys."""
    tree = RootFS(root)
    tree.write_text(ONE_USERNAME, _ONE_USERNAME_SCRIPT, mode=0o755)
    tree.write_text(f"/etc/systemd/system/{ONE_USERNAME_UNIT}",
                    "[Unit]\nDescription=Login for OpenNebula's USERNAME context variable (Rain)\n"
                    "After=cloud-init.service\nBefore=cloud-final.service\nWants=cloud-init.service\n\n"
                    "[Service]\nType=oneshot\nStandardOutput=journal+console\n"
                    f"ExecStart={ONE_USERNAME}\n\n[Install]\nWantedBy=cloud-init.target\n")
    tree.symlink(f"/etc/systemd/system/cloud-init.target.wants/{ONE_USERNAME_UNIT}", f"../{ONE_USERNAME_UNIT}")
    return [f"added {ONE_USERNAME_UNIT}: OpenNebula's USERNAME logs in with the context's SSH keys"]


def boot_marker(root: Path, text: str) -> list[str]:
    """A unit at multi-user.target that prints `text` on the console: proof the image itself booted."""
    tree = RootFS(root)
    tree.write_text(f"/etc/systemd/system/{MARKER_UNIT}",
                    "[Unit]\nDescription=Rain boot marker (the image reached multi-user.target)\n"
                    "After=basic.target\n\n[Service]\nType=oneshot\n"
                    f"ExecStart=/bin/sh -c 'echo {text} > /dev/console'\n\n"
                    "[Install]\nWantedBy=multi-user.target\n")
    tree.symlink(f"/etc/systemd/system/multi-user.target.wants/{MARKER_UNIT}", f"../{MARKER_UNIT}")
    return [f"added {MARKER_UNIT} (prints {text} on the console at multi-user.target)"]
