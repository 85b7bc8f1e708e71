"""Hostile archives (issue #9): the unpacker never changes a host file, creates no FIFO, and stops archive
bombs with a one-line error before they cost the disk or the memory of the registrar.

Every test that could reach the host keeps a canary directory beside the destination and
compares its snapshot (mode, owner, mtime, link count, content hash) before and after.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
import tracemalloc

import pytest
from support.hostile_tars import header, make_canary, member, snapshot, tar_bytes, write_zst, zeros_zst

from rain.config import load_settings
from rain.errors import InvalidInput
from rain.image import limits
from rain.image.untar import unpack_stream
from rain.register.pipeline import vet_path
from rain.register.unpack import unpack


def _unpack(tmp_path, members, **kw):
    src = write_zst(tmp_path / "img.tar.zst", tar_bytes(members))
    return {(f.rule, f.paths[0]) for f in unpack(src, tmp_path / "out", **kw)}


def test_hard_link_to_an_absolute_host_path_leaves_the_host_file_alone(tmp_path):
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    found = _unpack(tmp_path, [
        member("./etc/", tarfile.DIRTYPE, mode=0o755),
        member("./etc/shadow", tarfile.LNKTYPE, linkname=str(canary / "secret"),
               mode=0o777, uid=1234, gid=1234, mtime=0),
    ])
    assert snapshot(canary) == before
    assert not os.path.lexists(tmp_path / "out/etc/shadow")
    assert ("link-outside", f"/etc/shadow => {canary / 'secret'}") in found


def test_directory_over_an_absolute_symlink_leaves_the_host_directory_alone(tmp_path):
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    found = _unpack(tmp_path, [
        member("./d", tarfile.SYMTYPE, linkname=str(canary / "dir")),
        member("./d/", tarfile.DIRTYPE, mode=0o777, uid=4321, gid=4321, mtime=0),
        member("./d/inner", data=b"pwned"),
    ])
    assert snapshot(canary) == before
    assert (tmp_path / "out/d").is_symlink()  # the image's own link stays, nothing goes through it
    assert {r for r, p in found if p.startswith("/d")} == {"link-outside"}
    assert len([p for r, p in found if p.startswith("/d")]) == 2


def test_hard_link_may_only_join_a_regular_file_of_the_image(tmp_path):
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    found = _unpack(tmp_path, [
        member("./l", tarfile.SYMTYPE, linkname=str(canary / "secret")),
        member("./via-symlink", tarfile.LNKTYPE, linkname="./l", mode=0o777),
        member("./via-parent", tarfile.LNKTYPE, linkname="./up/secret", mode=0o777),
        member("./up", tarfile.SYMTYPE, linkname=str(canary)),
        member("./late", tarfile.LNKTYPE, linkname="./up/secret"),
        member("./missing", tarfile.LNKTYPE, linkname="./nothing"),
        member("./real", data=b"data", mode=0o4755),
        member("./alias", tarfile.LNKTYPE, linkname="./real", mode=0o600),
    ])
    assert snapshot(canary) == before
    assert {p.split(" ")[0] for r, p in found if r == "link-outside"} == {"/via-symlink", "/via-parent", "/late",
                                                                          "/missing"}
    out = tmp_path / "out"
    assert os.path.samefile(out / "alias", out / "real") and (out / "real").stat().st_mode & 0o7777 == 0o4755


def test_fifo_is_not_created_and_is_reported(tmp_path):
    found = _unpack(tmp_path, [
        member("./lib/modules/6.1/kernel/x.ko", tarfile.FIFOTYPE),
        member("./lib/modules/6.1/modules.dep", data=b"kernel/x.ko:\n"),
    ])
    assert not os.path.lexists(tmp_path / "out/lib/modules/6.1/kernel/x.ko")
    assert ("special-file", "/lib/modules/6.1/kernel/x.ko") in found


def test_archive_bomb_is_refused_before_it_fills_the_disk_and_leaves_nothing(tmp_path, monkeypatch):
    """A 32 KB archive that expands to 1 GiB: a one-line error, and the temporary tree is gone."""
    bomb = zeros_zst(tmp_path / "bomb.tar.zst", header("./zeros", 1 << 30, tarfile.REGTYPE), 1 << 30)
    assert bomb.stat().st_size < 64 << 10
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    start = time.monotonic()
    with pytest.raises(InvalidInput, match=r"bomb.tar.zst unpacks to more than .*archive's") as e:
        vet_path(bomb)
    assert time.monotonic() - start < 10
    assert "unpack_max" in (e.value.hint or "") and "\n" not in e.value.one_line()
    assert list(work.iterdir()) == []


def test_entry_count_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ENTRIES", 50)
    with pytest.raises(InvalidInput, match="more than 50 entries"):
        _unpack(tmp_path, [member(f"./f{i}") for i in range(60)])


def test_configured_limit_and_free_space_bound_the_tree(tmp_path):
    with pytest.raises(InvalidInput, match=r"unpacks to more than 1.0 MiB \(unpack_max\)"):
        _unpack(tmp_path, [member("./big", data=b"x" * (2 << 20))], max_size=1 << 20)
    limit, why = limits.expanded_limit(1000, tmp_path, 1 << 60)
    st = os.statvfs(tmp_path)
    assert limit <= st.f_bavail * st.f_frsize - limits.FREE_MARGIN and "free space" in why
    assert load_settings(environ={"RAIN_UNPACK_MAX": "2G"}).unpack_max == 2 << 30


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_huge_extended_header_is_refused_without_reading_it_into_memory(tmp_path, kind):
    """A few KB archive whose pax header (or GNU long name) claims 512 MiB."""
    tail = tar_bytes([member("./after", data=b"x")], tarfile.USTAR_FORMAT)[:-1024]
    src = zeros_zst(tmp_path / "hdr.tar.zst", header("././@LongLink", 512 << 20, kind), 512 << 20, tail)
    assert src.stat().st_size < 64 << 10
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="header of 512.0 MiB"):
            unpack(src, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_chained_headers_are_a_clear_error(tmp_path):
    pax = tar_bytes([member("./x", data=b"x")], tarfile.PAX_FORMAT)
    one = header("././@PaxHeader", 512, tarfile.XHDTYPE) + b"\0" * 512
    src = write_zst(tmp_path / "chain.tar.zst", one * 3000 + pax)
    with pytest.raises(InvalidInput, match="chain"):
        unpack(src, tmp_path / "out")


def _pax_record(text: str) -> bytes:
    """'LEN key=value\\n' where LEN counts the whole record, its own digits included."""
    size = len(text) + 2
    size += len(str(size + len(str(size))))
    return f"{size} {text}\n".encode()


def test_sparse_map_bomb_is_a_clear_error(tmp_path):
    records = b"".join(_pax_record(r) for r in (
        "GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=./sparse", "GNU.sparse.realsize=10"))
    data = b"99999999\n" + b"0\n" * 300_000
    pax = header("././@PaxHeader", len(records), tarfile.XHDTYPE) + records.ljust(512, b"\0")
    body = header("./GNUSparseFile.0/sparse", len(data), tarfile.REGTYPE) + data + b"\0" * (-len(data) % 512)
    src = write_zst(tmp_path / "sparse.tar.zst", pax + body + b"\0" * 1024)
    with pytest.raises(InvalidInput, match="sparse"):
        unpack(src, tmp_path / "out")


def test_unknown_owner_never_leaves_a_setuid_file_owned_by_root(tmp_path):
    """uid -1 (base-256) would make chown a no-op: the root-owned copy must lose its setuid bit."""
    src = write_zst(tmp_path / "x.tar.zst", tar_bytes([member("./su", data=b"#!", mode=0o4755, uid=-1)],
                                                      tarfile.GNU_FORMAT))
    unpack(src, tmp_path / "out")
    st = os.stat(tmp_path / "out/su")
    assert st.st_uid != 0 or not st.st_mode & 0o6000


def test_regular_image_keeps_owners_modes_links_and_directory_times(tmp_path):
    found = _unpack(tmp_path, [
        member("./", tarfile.DIRTYPE, mode=0o755, mtime=1_600_000_000),
        member("./tmp/", tarfile.DIRTYPE, mode=0o1777, mtime=1_600_000_000),
        member("./home/alice/", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000, mtime=1_600_000_000),
        member("./home/alice/notes", data=b"hi", mode=0o600, uid=1000, gid=1000),
        member("./usr/bin/python3.11", data=b"\x7fELF", mode=0o755),
        member("./usr/bin/python", tarfile.SYMTYPE, linkname="/usr/bin/python3.11", uid=7, gid=7),
        member("./usr/bin/su", data=b"#!", mode=0o4755),
        member("./usr/bin/sudo", tarfile.LNKTYPE, linkname="./usr/bin/su"),
        member("./usr/bin/su", data=b"#!new", mode=0o4755),  # a duplicate replaces, never writes through
    ])
    out = tmp_path / "out"
    assert found == set()
    home = os.stat(out / "home/alice")
    assert (home.st_uid, home.st_gid, home.st_mode & 0o7777, home.st_mtime) == (1000, 1000, 0o700, 1_600_000_000)
    assert os.stat(out / "tmp").st_mode & 0o7777 == 0o1777 and os.stat(out).st_mtime == 1_600_000_000
    assert os.readlink(out / "usr/bin/python") == "/usr/bin/python3.11"
    assert os.lstat(out / "usr/bin/python").st_uid == 7
    assert (out / "usr/bin/su").read_bytes() == b"#!new" and (out / "usr/bin/sudo").read_bytes() == b"#!"
    assert os.stat(out / "usr/bin/su").st_mode & 0o7777 == 0o4755


def test_member_written_through_a_link_inside_the_image_is_refused(tmp_path):
    found = _unpack(tmp_path, [
        member("./usr/lib/", tarfile.DIRTYPE, mode=0o755),
        member("./lib", tarfile.SYMTYPE, linkname="usr/lib"),
        member("./lib/x", data=b"x"),
    ])
    assert ("link-outside", "/lib/x (written through the link /lib)") in found
    assert not (tmp_path / "out/usr/lib/x").exists()


def test_a_plain_tar_stream_gets_the_same_protection(tmp_path):
    """unpack_stream, for the other readers of untrusted trees (clones, builder results)."""
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    stream = io.BytesIO(tar_bytes([
        member("./d", tarfile.SYMTYPE, linkname=str(canary / "dir")),
        member("./d/", tarfile.DIRTYPE, mode=0o777, uid=4321, gid=4321, mtime=0),
        member("./ok", data=b"ok"),
    ]))
    found = unpack_stream(stream, tmp_path / "out", "the base image")
    assert snapshot(canary) == before and (tmp_path / "out/ok").read_bytes() == b"ok"
    assert [f.rule for f in found] == ["link-outside"]
    with pytest.raises(InvalidInput, match=r"^the base image unpacks to more than 1.0 KiB \(unpack_max\)"):
        unpack_stream(io.BytesIO(tar_bytes([member("./big", data=b"x" * 4096)])), tmp_path / "o2", "the base image",
                      max_size=1024)
