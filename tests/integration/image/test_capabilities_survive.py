"""File capabilities (`getcap`) and user attributes survive every copy Rain makes of a tree.

A source tree gets `setcap cap_net_raw=ep` on a program (as Debian's iputils-ping
postinst does) and user.* attributes on a file and a directory; the tree then goes
through Rain's own producers (generate's tar.zst packing, the disk maker, qcow2 and
squashfs conversion) and back through Rain's one unpacker (register's unpack of
every format, and the clone path), and the real `getcap` must answer the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rain.generate.bootstrap.clone import safe_unpack
from rain.image.disk import make_disk
from rain.image.formats import make_squashfs, to_qcow2
from rain.image.tarball import pack_tar_zst
from rain.register.unpack import unpack

pytestmark = pytest.mark.integration

PROGRAMS = ("usr/bin/ping", "usr/sbin/tool")


def getcaps(root: Path) -> dict[str, str]:
    """`getcap -r` over the tree: image path -> capabilities."""
    out = subprocess.run([shutil.which("getcap") or "getcap", "-r", str(root)], capture_output=True, text=True,
                         check=True).stdout
    caps = {}
    for line in out.splitlines():
        path, _, value = line.rpartition(" ")
        caps["/" + os.path.relpath(path, root)] = value
    return caps


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or shutil.which("setcap") is None:
        pytest.skip("needs root and setcap (libcap2-bin, installed by scripts/setup.sh)")
    root = tmp_path_factory.mktemp("caps") / "root"
    for program in PROGRAMS:
        (root / program).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shutil.which("true") or "/bin/true", root / program)
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    subprocess.run(["setcap", "cap_net_raw=ep", str(root / PROGRAMS[0])], check=True)
    subprocess.run(["setcap", "cap_net_admin,cap_net_bind_service+eip", str(root / PROGRAMS[1])], check=True)
    os.setxattr(root / "etc/motd", "user.rain.origin", b"source")
    os.setxattr(root / "etc", "user.rain.dir", b"\x00\xff")
    return root


def _tar_zst(root: Path, work: Path) -> Path:
    pack_tar_zst(root, work / "img.tar.zst")
    return work / "img.tar.zst"


def _raw(root: Path, work: Path) -> Path:
    return make_disk(root, work / "img.raw", bootable=False).path


MAKERS: dict[str, Callable[[Path, Path], Path]] = {
    "tar.zst": _tar_zst,
    "raw": _raw,
    "qcow2": lambda root, work: to_qcow2(_raw(root, work), work / "img.qcow2", compress=True),
    "squashfs": lambda root, work: make_squashfs(root, work / "img.squashfs", level=3),
}


def test_the_source_tree_has_the_capabilities(source: Path) -> None:
    assert getcaps(source) == {"/usr/bin/ping": "cap_net_raw=ep",
                               "/usr/sbin/tool": "cap_net_bind_service,cap_net_admin=eip"}


@pytest.mark.parametrize("fmt", list(MAKERS))
def test_registers_unpack_gives_back_the_same_capabilities(source: Path, tmp_path: Path, fmt: str) -> None:
    image = MAKERS[fmt](source, tmp_path)
    out = tmp_path / "unpacked"
    findings = unpack(image, out, fmt)
    assert [f for f in findings if f.rule == "xattr-dropped"] == []
    assert getcaps(out) == getcaps(source)
    assert os.getxattr(out / "etc/motd", "user.rain.origin") == b"source"
    assert os.getxattr(out / "etc", "user.rain.dir") == b"\x00\xff"


def test_a_clone_of_the_packed_image_keeps_them(source: Path, tmp_path: Path) -> None:
    root = tmp_path / "clone"
    root.mkdir()
    assert safe_unpack(_tar_zst(source, tmp_path), root) == 0
    assert getcaps(root) == getcaps(source)
    assert os.getxattr(root / "etc/motd", "user.rain.origin") == b"source"
