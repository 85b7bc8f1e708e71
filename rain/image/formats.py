"""An image tree or disk as one file, the same way in every stage: tar options, squashfs, qcow2.

Generate and register differ only in the arguments, chosen at the call site:
generate keeps its artifacts in the cache and the repository (smaller files,
built once), register packs one copy for a target (faster, published once).
Whole disks are rain.image.disk; reading formats back safely is rain.register.disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from rain.host import command

TAR_OPTS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
"""Every tar stream Rain writes of an image root (and GNU tar extracts): numeric owners, every extended
attribute (file capabilities; without the include pattern an extracting tar keeps only user.*) and ACLs."""


def make_squashfs(root: Path, out: Path, *, level: int, processors: int | None = None,
                  epoch: int | None = None) -> Path:
    """root as a zstd squashfs at `level` (1-22), on `processors` cores (default: all). With `epoch` the
    same tree gives the same bytes: it is the file system's creation time and later file times are clamped
    to it (mksquashfs's SOURCE_DATE_EPOCH; its output does not depend on the number of processors)."""
    command.run(["mksquashfs", str(root), str(out), "-noappend", "-comp", "zstd", "-Xcompression-level", str(level),
                 "-processors", str(processors or max(1, os.cpu_count() or 1)), "-quiet", "-no-progress"],
                what="mksquashfs", env=None if epoch is None else {"SOURCE_DATE_EPOCH": str(epoch)})
    return out


def make_lower(root: Path, out: Path) -> Path:
    """root as the read-only lower layer a builder VM on this host mounts under an overlay (Builder.attach_base):
    lz4, the cheapest to read for an emulated CPU (about half the tree's size, made in a couple of seconds), with
    every extended attribute (file capabilities). Links are stored as links: nothing in `root` is followed."""
    command.run([command.need("mksquashfs"), str(root), str(out), "-noappend", "-comp", "lz4", "-xattrs",
                 "-no-progress", "-quiet", "-processors", "2"],
                what="making the image's read-only layer for the builder")
    return out


def to_qcow2(raw: Path, out: Path, *, compress: bool) -> Path:
    """A raw disk as qcow2; `compress` zstd-compresses its clusters (smaller upload, slower to write)."""
    extra = ["-c", "-o", "compression_type=zstd", "-m", "2", "-W"] if compress else []
    command.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", *extra, str(raw), str(out)],
                what="converting to qcow2")
    return out
