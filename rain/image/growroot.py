"""A bootable disk's root grows into a larger disk at first boot, also without cloud-init.

Images with cloud-init grow their root by its growpart module. For the others,
the disk's root file system (not the image's tree, nor its tarball: the disk
is the only format whose size a user changes) gets two files with systemd's
own tools, which bookworm and later carry:

- `/etc/repart.d/50-rain-root.conf`: systemd-repart (enabled by default at
  boot when a repart.d directory has a file) grows the root partition, the
  disk's last, into the space after it;
- `rain-growfs-root.service` (wanted by local-fs.target): systemd-growfs then
  grows the mounted ext4 to the partition, online.

They are written into the finished ext4 with debugfs, at the root file
system's offset in the disk file; debugfs resolves paths inside that file
system only, so nothing in the image can point the writes at the host.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rain.errors import BuildError
from rain.host.tools import run
from rain.image.rootfs import RootFS

REPART_CONF = "/etc/repart.d/50-rain-root.conf"
UNIT = "rain-growfs-root.service"
REPART = ("/usr/bin/systemd-repart", "/bin/systemd-repart")
GROWFS = ("/usr/lib/systemd/systemd-growfs", "/lib/systemd/systemd-growfs")
CLOUD_INIT = ("/usr/bin/cloud-init",)


def wanted(root: Path) -> str | None:
    """The image's systemd-growfs when its disk should get Rain's growth units, else None: not when
    cloud-init grows the root itself, nor when the image brings its own repart.d, nor without systemd's tools."""
    tree = RootFS(root)
    if any(tree.exists(p) for p in CLOUD_INIT) or tree.exists("/etc/repart.d"):
        return None
    if not any(tree.is_regular(p) for p in REPART):
        return None
    return next((p for p in GROWFS if tree.is_regular(p)), None)


def unit_text(growfs: str) -> str:
    return ("# written by Rain into the disk's root file system: grow / to its partition at boot\n"
            "[Unit]\nDescription=Grow the root file system to its partition\n"
            "DefaultDependencies=no\nWants=systemd-repart.service\n"
            "After=systemd-repart.service systemd-remount-fs.service\n"
            "Before=local-fs.target shutdown.target\nConflicts=shutdown.target\n\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "Environment=SYSTEMD_LOG_TARGET=console\nStandardOutput=journal+console\n"
            f"ExecStart={growfs} /\n\n[Install]\nWantedBy=local-fs.target\n")


REPART_TEXT = ("# written by Rain into the disk's root file system: the root partition (the disk's last)\n"
               "# takes the space after it when the disk is larger than the image\n"
               "[Partition]\nType=root-x86-64\n")


def add(root: Path, disk: Path, offset: int, clock: dict[str, str] | None = None) -> bool:
    """Write the growth units into the ext4 at `offset` in `disk` when `wanted`; returns whether it did."""
    growfs = wanted(root)
    if growfs is None:
        return False
    spec = f"{disk}?offset={offset}"
    with tempfile.TemporaryDirectory(prefix="rain-growroot-") as tmp:
        conf, unit = Path(tmp) / "repart.conf", Path(tmp) / UNIT
        conf.write_text(REPART_TEXT)
        unit.write_text(unit_text(growfs))
        conf.chmod(0o644)
        unit.chmod(0o644)
        wants = "/etc/systemd/system/local-fs.target.wants"
        script = "\n".join([
            "mkdir /etc/repart.d",
            f"write {conf} {REPART_CONF}",
            "mkdir /etc/systemd", "mkdir /etc/systemd/system", f"mkdir {wants}",  # exist in most images: no-ops
            f"write {unit} /etc/systemd/system/{UNIT}",
            f"symlink {wants}/{UNIT} ../{UNIT}",
        ]) + "\n"
        run(["debugfs", "-w", "-f", "-", spec], "adding the root growth units", input=script.encode(), env=clock)
    listing = run(["debugfs", "-R", f"ls -l {wants}", spec], "checking the root growth units")
    if UNIT not in listing:
        raise BuildError("could not add the root growth units to the disk (debugfs)",
                         hint="check that e2fsprogs' debugfs works on this host")
    return True
