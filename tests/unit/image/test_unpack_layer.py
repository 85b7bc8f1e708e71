"""A builder VM's overlayfs upper layer, laid over the base the host already has, gives the VM's tree.

The layer is made the way the qemu builder makes it: a real overlayfs mount over
a lower directory, changed by real commands (deleting, replacing a directory
by a file, `rm -r` then `mkdir`, which marks the directory opaque), unmounted,
and its upper directory packed by GNU tar with the options Rain uses. The
unpacker lays it over another overlay of the same lower (as the build does on
this host); the result must list exactly what the VM's merged view listed.
Crafted layers must not reach past the root or through a link.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rain.generate.bootstrap.clone import UnsafeArchive, safe_extract
from rain.image.formats import TAR_OPTS


def _mount_overlay(lower: Path, upper: Path, work: Path, at: Path) -> None:
    for d in (upper, work, at):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "test-layer", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,index=off,metacopy=off",
                    str(at)], check=True)


def _listing(root: Path) -> dict[str, str]:
    """Every path under root with its type, link target or content: what a user of the image sees."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = f"dir {oct(p.stat().st_mode & 0o7777)}"
            else:
                out[rel] = f"file {oct(p.stat().st_mode & 0o7777)} {p.read_bytes()!r}"
    return out


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    base = tmp_path / "lower"
    (base / "etc/old.d").mkdir(parents=True)
    (base / "etc/old.d/a.conf").write_text("a\n")
    (base / "etc/old.d/b.conf").write_text("b\n")
    (base / "etc/gone").write_text("deleted in the VM\n")
    (base / "etc/kept").write_text("unchanged\n")
    (base / "etc/edited").write_text("before\n")
    (base / "usr/lib/tool").mkdir(parents=True)
    (base / "usr/lib/tool/data").write_text("lib data\n")
    (base / "lib").symlink_to("usr/lib")
    (base / "var/dirgone/deep").mkdir(parents=True)
    (base / "var/dirgone/deep/f").write_text("x\n")
    (base / "var/wasdir").mkdir(parents=True)
    (base / "var/wasdir/f").write_text("x\n")
    (base / "var/wasfile").write_text("a file, then a directory\n")
    (base / "opt").mkdir()
    (base / "opt/link").symlink_to("/etc")
    return base


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for p in reversed(points):
        subprocess.run(["umount", str(p)], check=False)


def _vm_layer(tmp_path: Path, lower: Path, mounts: list[Path]) -> tuple[bytes, dict[str, str]]:
    """What the VM does: change the tree through an overlay; returns (tar of the upper layer, merged view)."""
    merged, upper = tmp_path / "vm-root", tmp_path / "vm-upper"
    _mount_overlay(lower, upper, tmp_path / "vm-work", merged)
    mounts.append(merged)
    (merged / "etc/gone").unlink()
    subprocess.run(["rm", "-r", str(merged / "etc/old.d")], check=True)
    (merged / "etc/old.d").mkdir()  # opaque: a.conf and b.conf must not come back
    (merged / "etc/old.d/new.conf").write_text("new\n")
    (merged / "etc/edited").write_text("after\n")
    subprocess.run(["rm", "-r", str(merged / "var/dirgone")], check=True)
    subprocess.run(["rm", "-r", str(merged / "var/wasdir")], check=True)
    (merged / "var/wasdir").write_text("now a file\n")
    (merged / "var/wasfile").unlink()
    (merged / "var/wasfile").mkdir()
    (merged / "var/wasfile/inside").write_text("in the new directory\n")
    (merged / "opt/link").unlink()
    (merged / "opt/link").mkdir()  # a directory where the base had a link to /etc
    (merged / "opt/link/mine").write_text("not in /etc\n")
    (merged / "usr/bin").mkdir(parents=True)
    (merged / "usr/bin/added").write_text("#!/bin/sh\n")
    (merged / "usr/bin/added").chmod(0o755)
    view = _listing(merged)
    subprocess.run(["umount", str(merged)], check=True)
    mounts.remove(merged)
    tar = subprocess.run(["tar", "-C", str(upper), *TAR_OPTS, "--one-file-system", "-cf", "-", "."],
                         check=True, capture_output=True).stdout
    return tar, view


def test_the_vm_layer_over_the_same_base_gives_the_vm_tree(tmp_path: Path, lower: Path,
                                                           mounts: list[Path]) -> None:
    tar, view = _vm_layer(tmp_path, lower, mounts)
    assert any(m.ischr() for m in tarfile.open(fileobj=io.BytesIO(tar))), "the layer carries whiteouts"
    host = tmp_path / "host-root"
    _mount_overlay(lower, tmp_path / "host-upper", tmp_path / "host-work", host)
    mounts.append(host)
    safe_extract(io.BytesIO(tar), host, what="the built image", layer=True)
    assert _listing(host) == view
    assert not (host / "etc/gone").exists() and not (host / "var/dirgone").exists()
    assert sorted(os.listdir(host / "etc/old.d")) == ["new.conf"]
    assert (lower / "etc/old.d/a.conf").is_file() and (lower / "etc/gone").is_file(), "the cached base is untouched"
    assert (lower / "opt/link").is_symlink() and not (Path("/etc") / "mine").exists()


def test_the_same_layer_over_a_plain_copy_of_the_base_gives_the_same_tree(tmp_path: Path, lower: Path,
                                                                          mounts: list[Path]) -> None:
    tar, view = _vm_layer(tmp_path, lower, mounts)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", f"{lower}/.", str(copy)], check=True)
    safe_extract(io.BytesIO(tar), copy, what="the built image", layer=True)
    assert _listing(copy) == view
    for dirpath, dirnames, _ in os.walk(copy):
        for d in dirnames:
            assert not any(a.startswith("trusted.") for a in os.listxattr(Path(dirpath) / d)), \
                "the layer's overlay marks are never set here"


def _crafted(members: list[tarfile.TarInfo]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m)
    buf.seek(0)
    return buf


def _whiteout(name: str) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.devmajor, m.devminor = tarfile.CHRTYPE, 0, 0
    return m


def test_a_whiteout_through_a_link_or_past_the_root_removes_nothing(tmp_path: Path, lower: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("a host file\n")
    (lower / "hostlink").symlink_to(str(tmp_path))
    for name in ("lib/tool/data", "hostlink/outside", "../outside"):
        with pytest.raises(UnsafeArchive):
            safe_extract(_crafted([_whiteout(name)]), lower, what="the built image", layer=True)
    assert outside.read_text() == "a host file\n"
    assert (lower / "usr/lib/tool/data").is_file(), "a whiteout below a link does not follow it"


def test_a_layer_makes_no_device_node_and_sets_no_overlay_attribute(tmp_path: Path, lower: Path) -> None:
    dev = tarfile.TarInfo("etc/disk")
    dev.type, dev.devmajor, dev.devminor = tarfile.BLKTYPE, 8, 0
    null = tarfile.TarInfo("etc/null")
    null.type, null.devmajor, null.devminor = tarfile.CHRTYPE, 1, 3
    redirect = tarfile.TarInfo("etc/old.d")
    redirect.type, redirect.mode = tarfile.DIRTYPE, 0o755
    redirect.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/usr", "SCHILY.xattr.trusted.overlay.opaque": "y"}
    safe_extract(_crafted([dev, null, redirect]), lower, what="the built image", layer=True)
    assert not (lower / "etc/disk").exists() and not (lower / "etc/null").exists()
    assert os.listdir(lower / "etc/old.d") == [], "opaque: the base's files in it are gone"
    assert os.listxattr(lower / "etc/old.d") == []


def test_without_layer_a_whiteout_is_a_skipped_device_node_and_removes_nothing(lower: Path) -> None:
    assert safe_extract(_crafted([_whiteout("etc/kept")]), lower, what="the built image") == 1
    assert (lower / "etc/kept").read_text() == "unchanged\n"
