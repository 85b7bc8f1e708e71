"""Make an image generic: nothing that must differ between machines stays baked in.

Run at the end of every build and again on every registered copy: an empty
/etc/machine-id (systemd makes one at boot), no dbus machine-id, no SSH host
keys (a first-boot unit makes each instance its own before sshd starts).
"""

from __future__ import annotations

from pathlib import Path

from rain.image.rootfs import RootFS

HOSTKEYS_UNIT = "rain-ssh-hostkeys.service"


def generalize(root: Path) -> list[str]:
    """Make every instance its own machine: fresh machine-id, SSH host keys made at first boot."""
    tree, done = RootFS(root), []
    if tree.exists("/etc/machine-id"):
        tree.write_text("/etc/machine-id", "", 0o444)  # empty: systemd generates one at boot
        done.append("emptied /etc/machine-id (each instance generates its own)")
    if tree.remove("/var/lib/dbus/machine-id"):
        done.append("removed /var/lib/dbus/machine-id")
    keys = tree.glob("/etc/ssh", "ssh_host_*")
    for key in keys:
        tree.remove(key)
    if keys:
        done.append(f"removed {len(keys)} SSH host key file(s)")
    if tree.exists("/usr/sbin/sshd"):
        tree.write_text(f"/etc/systemd/system/{HOSTKEYS_UNIT}",
                        "[Unit]\nDescription=Rain: make this instance's SSH host keys at first boot\n"
                        "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\nBefore=ssh.service sshd.service\n\n"
                        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
                        "[Install]\nWantedBy=multi-user.target\n")
        tree.symlink(f"/etc/systemd/system/multi-user.target.wants/{HOSTKEYS_UNIT}", f"../{HOSTKEYS_UNIT}")
        done.append(f"added {HOSTKEYS_UNIT} (ssh-keygen -A at first boot, before sshd)")
    return done
