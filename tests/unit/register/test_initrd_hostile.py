"""The bare-metal initrd builder reads only regular files of bounded size inside the image.

A module listed in modules.dep that is a FIFO used to hang `fg-image register` for ever; one that links
out of the root, is missing or is huge now stops registration with a one-line error naming the module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from support.images import KVER, make_tree

from rain.errors import InvalidInput
from rain.register import initrd
from rain.register.initrd import build_initrd

pytestmark = pytest.mark.timeout(60)  # the FIFO defect was a hang: fail instead of stalling CI

MODULE = "kernel/fs/squashfs/squashfs.ko"


def tree_with_module(tmp_path: Path) -> tuple[Path, Path]:
    root = make_tree(tmp_path / "r")
    mods = root / "lib/modules" / KVER
    (mods / "modules.dep").write_text(f"{MODULE}:\n")
    (mods / MODULE).parent.mkdir(parents=True)
    return root, mods / MODULE


def snapshot(path: Path) -> tuple[int, int, int, int, int, str]:
    st = os.stat(path)
    return st.st_mode, st.st_uid, st.st_mtime_ns, st.st_nlink, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest()


def refused(root: Path, out: Path) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        build_initrd(root, KVER, out)
    assert "\n" not in e.value.one_line() and MODULE in e.value.message
    assert not out.exists() and not list(out.parent.glob(out.name + "*"))  # nothing half-written
    return e.value


def test_a_fifo_module_is_refused_not_read(tmp_path):
    root, module = tree_with_module(tmp_path)
    os.mkfifo(module)
    assert "FIFO" in refused(root, tmp_path / "initrd.img").message


def test_a_module_linking_out_of_the_root_never_reads_the_host_file(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    secret = canary / "secret.ko"
    secret.write_bytes(b"CANARY-7d41 host file\n")
    before = snapshot(secret)
    root, module = tree_with_module(tmp_path)
    module.symlink_to("../" * 12 + str(secret).lstrip("/"))  # relative, climbing far above the root
    error = refused(root, tmp_path / "initrd.img")
    assert "missing" in error.message
    assert snapshot(secret) == before


def test_a_huge_module_is_refused(tmp_path):
    root, module = tree_with_module(tmp_path)
    with open(module, "wb") as f:
        f.truncate(512 << 20)  # sparse: costs no disk; far above any real module
    assert "bytes" in refused(root, tmp_path / "initrd.img").message


def test_module_names_that_climb_out_of_lib_modules_are_skipped(tmp_path):
    root, module = tree_with_module(tmp_path)
    module.write_bytes(b"\x7fELF squashfs")
    mods = root / "lib/modules" / KVER
    (mods / "modules.dep").write_text(f"{MODULE}: ../../../etc/shadow\n")
    out = build_initrd(root, KVER, tmp_path / "initrd.img")
    assert out.is_file()
    assert initrd.module_order(root, KVER) == [MODULE]
