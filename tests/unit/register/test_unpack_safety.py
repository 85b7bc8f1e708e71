"""Unpacking never writes outside the root, creates no device nodes, follows no escaping links;
what it refuses shows up as vetting findings."""

from __future__ import annotations

import io
import tarfile

import pytest
import zstandard
from support.images import make_tarball, make_tree

from rain.errors import InvalidInput
from rain.register.models import Severity
from rain.register.unpack import detect_format, unpack


def tarball(path, members):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def member(name, type=tarfile.REGTYPE, data=b"", linkname="", devmajor=0, devminor=0, mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type, linkname, mode
    info.devmajor, info.devminor = devmajor, devminor
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, (data if type == tarfile.REGTYPE else None)


def test_escaping_member_is_refused_and_reported(tmp_path):
    src = make_tarball(make_tree(tmp_path / "r"), tmp_path / "img.tar.zst", escape=True)
    dest = tmp_path / "a" / "b" / "out"
    findings = unpack(src, dest)
    assert [(f.rule, f.paths) for f in findings] == [("archive-escape", ("../../etc/x",))]
    assert not (tmp_path / "a" / "etc" / "x").exists() and not (tmp_path / "etc" / "x").exists()
    assert (dest / "etc/passwd").is_file() and (dest / "usr/bin/su").stat().st_mode & 0o4000


def test_absolute_names_device_nodes_and_escaping_links(tmp_path):
    src = tarball(tmp_path / "x.tar.zst", [
        member("./etc/", tarfile.DIRTYPE, mode=0o755),
        member("/etc/abs", data=b"x"),
        member("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("./etc/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        member("./etc/up", tarfile.SYMTYPE, linkname="../../../outside"),
        member("./etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"),
        member("./etc/hard", tarfile.LNKTYPE, linkname="../outside"),
    ])
    dest = tmp_path / "out"
    found = {(f.rule, f.paths[0], f.severity) for f in unpack(src, dest)}
    assert ("archive-escape", "/etc/abs", None) in found
    assert ("device-node", "/dev/null", Severity.INFO) in found  # the standard set is only noted
    assert ("device-node", "/etc/sda", None) in found
    assert any(r == "link-outside" and p.startswith("/etc/up") for r, p, _ in found)
    assert any(r == "link-outside" and p.startswith("/etc/hard") for r, p, _ in found)
    assert not (dest / "dev/null").exists() and not (dest / "etc/sda").exists()
    assert (dest / "etc/localtime").is_symlink()  # absolute links resolve inside the image


def test_no_write_through_a_link_planted_by_an_earlier_member(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    src = tarball(tmp_path / "x.tar.zst", [
        member("./etc/", tarfile.DIRTYPE, mode=0o755),
        member("./etc/evil", tarfile.SYMTYPE, linkname=str(victim)),
        member("./etc/evil/owned", data=b"pwned"),
        member("./etc/file", tarfile.SYMTYPE, linkname=str(victim / "f")),
        member("./etc/file", data=b"replaced"),
    ])
    findings = unpack(src, tmp_path / "out")
    assert not (victim / "owned").exists() and not (victim / "f").exists()
    assert any(f.rule == "link-outside" for f in findings)
    assert (tmp_path / "out/etc/file").read_bytes() == b"replaced"


def test_garbage_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.tar.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    with pytest.raises(InvalidInput, match="archive"):
        unpack(bad, tmp_path / "out")


def test_format_detection(tmp_path):
    (tmp_path / "q").write_bytes(b"QFI\xfb....")
    assert detect_format(tmp_path / "q") == "qcow2"
    assert detect_format(tmp_path) == "dir"
    with pytest.raises(InvalidInput, match="vmdk") as e:
        detect_format(tmp_path / "q", "vmdk")
    assert "tar.zst" in e.value.hint
