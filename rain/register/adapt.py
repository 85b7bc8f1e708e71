"""Adaptations more than one target makes to its copy of the image.

Each function changes the tree at `root` (a private copy) and returns what it
did as human-readable lines for the registration record and the docs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rain.image.rootfs import RootFS
from rain.image.sysprep import generalize
from rain.register.disk import ROOT_LABEL

MARKER_UNIT = "rain-boot-marker.service"


def cloud_disk(root: Path, target: str, datasources: list[str], extra: dict | None = None) -> list[str]:
    """What every cloud target does to its copy: generic machine, root by label, cloud-init, serial console."""
    return (generalize(root) + disk_fstab(root) + cloud_init(root, target, datasources, extra)
            + serial_console(root))


def disk_fstab(root: Path) -> list[str]:
    RootFS(root).write_text("/etc/fstab", f"# written by Rain for a single-disk image\n"
                                          f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
    return [f"/etc/fstab mounts the root by LABEL={ROOT_LABEL}"]


def cloud_init(root: Path, target: str, datasources: list[str], extra: dict | None = None) -> list[str]:
    """Point cloud-init at the target's datasource(s)."""
    tree = RootFS(root)
    config = {"datasource_list": datasources + ["None"], **(extra or {})}
    path = f"/etc/cloud/cloud.cfg.d/90-rain-{target}.cfg"
    tree.write_text(path, "# written by Rain: datasources for " + target + "\n"
                    + yaml.safe_dump(config, sort_keys=False))
    done = [f"{path}: cloud-init datasource_list {', '.join(datasources)}"]
    if not tree.exists("/usr/bin/cloud-init"):
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
