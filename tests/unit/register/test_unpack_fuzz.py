"""Fuzzing the tar unpacker with hypothesis: whatever the archive holds, nothing outside the root changes.

Archives mix every member type (regular, contiguous, directory, symlink, hard
link, FIFO, character and block device) under a small alphabet of names, so
duplicates, directories over links and members under links come up often;
link targets point at a canary directory beside the root (absolutely and
relatively), at other members, or nowhere. Some members carry long names or
large pax headers, and some extended attributes (kept, label and host-trusted
namespaces, names needing escapes, non-UTF-8 values). Each example must end in findings or a Rain error (never
another exception) within the deadline, leave the canary byte-for-byte and
inode-for-inode as it was, carrying no attribute, and leave no device node or FIFO
in the root and no attribute outside security.capability and user.*.
The run is derandomized and keeps no example database, so CI sees the same
examples every time; it takes about half a minute.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hostile_tars import make_canary, snapshot, tar_bytes, write_zst

from rain.errors import InvalidInput
from rain.register.unpack import unpack

TYPES = [tarfile.REGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE, tarfile.BLKTYPE]
PARTS = ["a", "a", "b", "b", "d", "d", "etc", ".", "..", "L" * 255, "M" * 300]  # repeats: weights
CANARY_TARGETS = ["{canary}", "{canary}/secret", "{canary}/dir", "{canary}/dir/inner", "../canary/secret",
                  "../../canary", "../canary/dir"]

names = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from(["", "", "./", "./", "/"]),
    st.lists(st.sampled_from(PARTS), min_size=1, max_size=3),
)
specs = st.fixed_dictionaries({
    "name": names,
    "type": st.sampled_from(TYPES),
    "link": st.one_of(st.sampled_from(CANARY_TARGETS), names, st.just("")),
    "mode": st.sampled_from([0o644, 0o777, 0o4755, 0o000, 0o1777]),
    "owner": st.sampled_from([0, 1234, 65534]),
    "pax": st.sampled_from([0] * 12 + [4096, 300_000, 2 << 20]),
    "data": st.binary(max_size=64),
    "xattrs": st.sampled_from([{}] * 6 + [
        {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00 " + "\x00" * 14},
        {"SCHILY.xattr.user.a%3Db%25": "\udcff\x00v"}, {"SCHILY.xattr.trusted.overlay.redirect": "/canary"},
        {"SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0", "SCHILY.xattr.user.x": "1"},
        {"SCHILY.xattr.user.big": "v" * 70_000}, {"SCHILY.xattr.user.": "empty name"}]),
})
KEPT = ("security.capability", "user.", "system.posix_acl_")


def _archive(members: list[dict], canary: Path) -> bytes:
    infos = []
    for spec in members:
        info = tarfile.TarInfo(spec["name"])
        info.type, info.mode, info.uid, info.gid = spec["type"], spec["mode"], spec["owner"], spec["owner"]
        info.linkname = spec["link"].format(canary=canary)
        info.mtime = 0
        data = spec["data"] if info.isreg() else b""
        info.size = len(data)
        info.pax_headers = dict(spec["xattrs"])
        if spec["pax"]:
            info.pax_headers["comment"] = "p" * spec["pax"]
        infos.append((info, data))
    return tar_bytes(infos)


def _host_changes(base: Path, before: dict, names_before: list[str]) -> list[str]:
    problems = [] if snapshot(base / "canary") == before else ["the canary changed"]
    if sorted(os.listdir(base)) != names_before:
        problems.append(f"new entries beside the root: {sorted(os.listdir(base))}")
    return problems


@settings(max_examples=250, deadline=timedelta(seconds=5), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(specs, min_size=1, max_size=10))
def test_nothing_outside_the_root_changes(members):
    with tempfile.TemporaryDirectory(prefix="rain-fuzz-") as tmp:
        base = Path(tmp)
        canary = make_canary(base)
        src = write_zst(base / "img.tar.zst", _archive(members, canary))
        before, names_before = snapshot(canary), sorted(os.listdir(base)) + ["out"]
        try:
            unpack(src, base / "out")
        except InvalidInput as e:
            assert "\n" not in e.one_line()
        assert _host_changes(base, before, names_before) == []
        for dirpath, dirnames, filenames in os.walk(base / "out"):
            for name in dirnames + filenames:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
                assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode))
                if not stat.S_ISLNK(mode):
                    assert all(a.startswith(KEPT) for a in os.listxattr(os.path.join(dirpath, name)))
        for dirpath, dirnames, filenames in os.walk(canary):
            for name in [".", *dirnames, *filenames]:
                assert os.listxattr(os.path.join(dirpath, name), follow_symlinks=False) == []
