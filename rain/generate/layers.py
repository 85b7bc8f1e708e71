"""A build's root as a writable layer over a cached base system (overlayfs), copy as fallback.

The cached base directory is the read-only lower layer; everything the build
changes lands in `workdir/upper`. Many builds can share one base at the same
time, and starting from a cached base costs a mount instead of an unpack.
Where overlayfs is not available the base is copied (`cp -a --reflink=auto`).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import ExitStack
from pathlib import Path

from rain.host import command

log = logging.getLogger(__name__)


def mounted_under(root: Path) -> list[str]:
    """Mount points at or below root, from /proc/mounts, deepest first."""
    prefix = str(root.resolve())
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return sorted(out, key=len, reverse=True)


def umount(point: Path | str) -> None:
    r = command.run(["umount", str(point)], check=False, cleanup=True)
    if r.returncode != 0:
        command.run(["umount", "-l", str(point)], check=False, cleanup=True)


def remove_tree(path: Path) -> None:
    """rm -r that first detaches anything still mounted below path (never deletes through a mount)."""
    for point in mounted_under(path):
        umount(point)
    left = mounted_under(path)
    if left:
        log.error("not removing %s: still mounted: %s", path, ", ".join(left))
        return
    shutil.rmtree(path, ignore_errors=True)


def stack_on(base: Path, root: Path, workdir: Path, undo: ExitStack) -> str:
    """Make root show base plus a private writable layer; the undo goes on `undo`. Returns how."""
    upper, work = workdir / "upper", workdir / "overlay-work"
    upper.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    root.mkdir(exist_ok=True)
    opts = f"lowerdir={base},upperdir={upper},workdir={work}"
    if not any(c in str(p) for p in (base, upper, work) for c in ",:"):
        r = command.run(["mount", "-t", "overlay", "rain-root", "-o", opts, str(root)], check=False)
        if r.returncode == 0:
            undo.callback(umount, root)
            return "overlay"
        log.info("overlayfs not available (%s); copying the base instead", r.output.strip()[-200:])
    command.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(root)], what="copying the base system")
    return "copy"
