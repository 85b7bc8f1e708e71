"""The safe unpacker keeps file capabilities and user.* attributes from the tar stream, and nothing else.

Archives are written with Python's tarfile in the PAX format GNU tar --xattrs
uses (`SCHILY.xattr.NAME` records, binary values); what lands on disk is read
back with the real `getcap` and os.getxattr. What is refused is one
`xattr-dropped` finding, never an exception, and never an attribute on disk.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from rain.errors import InvalidInput
from rain.image import limits
from rain.register.unpack import unpack
from rain.register.vet import vet_tree

CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
"""VFS_CAP_REVISION_2 with the effective flag, permitted = CAP_NET_RAW: what `setcap cap_net_raw=ep` writes."""


def _text(value: bytes) -> str:
    """How tarfile carries a binary pax value (and how it reads one back)."""
    return value.decode("utf-8", "surrogateescape")


def _escaped(name: str) -> str:
    """GNU tar's escaping of an attribute name in a pax keyword (a keyword ends at the first '=')."""
    return name.replace("%", "%25").replace("=", "%3D")


def member(name: str, kind: bytes = tarfile.REGTYPE, attrs: dict[str, bytes] | None = None, uid: int = 0,
           mode: int = 0o755, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.mode, m.uid, m.gid, m.linkname, m.mtime = kind, mode, uid, uid, link, 1_700_000_000
    m.pax_headers = {f"SCHILY.xattr.{_escaped(k)}": _text(v) for k, v in (attrs or {}).items()}
    return m


def archive(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for m in members:
            data = b"\x7fELF binary" if m.isreg() else b""
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    path = tmp_path / "img.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def getcap(path: Path) -> str:
    out = subprocess.run([shutil.which("getcap") or "getcap", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip().removeprefix(str(path)).strip()


def dropped(findings: list) -> list[str]:
    return [p for f in findings if f.rule == "xattr-dropped" for p in f.paths]


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("file capabilities and owners need root")


def test_a_capability_and_user_attributes_land_on_the_entry_itself(tmp_path: Path) -> None:
    src = archive(tmp_path, [
        member("./usr", tarfile.DIRTYPE, {"user.dir": b"d"}),
        member("./usr/bin", tarfile.DIRTYPE),
        member("./usr/bin/ping", attrs={"security.capability": CAP_NET_RAW, "user.bin\xff=%": b"\x00\xff\x80v"}),
    ])
    out = tmp_path / "out"
    assert unpack(src, out) == []
    assert getcap(out / "usr/bin/ping") == "cap_net_raw=ep"
    assert os.getxattr(out / "usr/bin/ping", "user.bin\xff=%") == b"\x00\xff\x80v", "exact bytes, escaped name"
    assert os.getxattr(out / "usr", "user.dir") == b"d"
    assert (out / "usr/bin/ping").stat().st_mode & 0o7777 == 0o755


def test_a_capability_is_set_after_the_owner_so_chown_does_not_clear_it(tmp_path: Path) -> None:
    src = archive(tmp_path, [member("tool", attrs={"security.capability": CAP_NET_RAW}, uid=1234)])
    out = tmp_path / "out"
    assert unpack(src, out) == []
    assert (out / "tool").stat().st_uid == 1234
    assert getcap(out / "tool") == "cap_net_raw=ep"


def test_a_capability_is_not_left_on_a_file_whose_owner_could_not_be_set(tmp_path: Path) -> None:
    src = archive(tmp_path, [member("tool", attrs={"security.capability": CAP_NET_RAW}, uid=(1 << 32) - 1,
                                    mode=0o4755)])
    out = tmp_path / "out"
    findings = unpack(src, out)
    assert getcap(out / "tool") == "", "like the setuid bit, which is cleared too"
    assert not (out / "tool").stat().st_mode & 0o4000
    assert dropped(findings) == ["/tool ('security.capability': its owner could not be set)"]


@pytest.mark.parametrize("name", ["security.selinux", "trusted.overlay.redirect", "security.ima",
                                  "system.nfs4_acl", "user."])
def test_labels_and_host_trusted_attributes_are_never_taken_from_an_image(tmp_path: Path, name: str) -> None:
    src = archive(tmp_path, [member("etc", tarfile.DIRTYPE, {name: b"/canary"}),
                             member("etc/file", attrs={name: b"system_u:object_r:shadow_t:s0"})])
    out = tmp_path / "out"
    findings = unpack(src, out)
    assert os.listxattr(out / "etc") == [] and os.listxattr(out / "etc/file") == []
    assert sorted(dropped(findings)) == [f"/etc ({name!r}: never taken from an image)",
                                         f"/etc/file ({name!r}: never taken from an image)"]
    report = vet_tree(out, "img", unpack_findings=findings)
    assert [f.rule for f in report.findings if f.rule == "xattr-dropped"] == ["xattr-dropped"]
    assert report.verdict.value == "pass", "a dropped label is worth a line in the report, not a refusal"


def test_a_symlink_keeps_no_attributes(tmp_path: Path) -> None:
    src = archive(tmp_path, [member("link", tarfile.SYMTYPE, {"user.a": b"x"}, link="/etc/passwd")])
    findings = unpack(src, tmp_path / "out")
    assert os.readlink(tmp_path / "out/link") == "/etc/passwd"
    assert dropped(findings) == ["/link ('user.a': a symlink takes no such attribute)"]


def test_more_attributes_on_one_entry_than_an_os_uses_are_dropped_with_a_finding(tmp_path: Path) -> None:
    many = {f"user.a{i}": b"v" for i in range(limits.MAX_ENTRY_XATTRS + 1)}
    src = archive(tmp_path, [member("f", attrs=many), member("g", attrs={"user.ok": b"1"})])
    findings = unpack(src, tmp_path / "out")
    assert os.listxattr(tmp_path / "out/f") == []
    assert os.getxattr(tmp_path / "out/g", "user.ok") == b"1"
    assert len(dropped(findings)) == 1 and "on one entry" in dropped(findings)[0]


def test_an_image_carrying_too_many_attribute_bytes_is_refused_like_a_bomb(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_XATTR_BYTES", 64 << 10)  # the real bound is 64 MiB; same code path
    src = archive(tmp_path, [member(f"f{i}", attrs={"user.big": b"v" * 3000}) for i in range(30)])
    with pytest.raises(InvalidInput) as e:
        unpack(src, tmp_path / "out")
    assert "carries more than 64.0 KiB of extended attributes" in e.value.one_line()
    assert "archive bomb" in (e.value.hint or "")


def test_one_attribute_the_file_system_refuses_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    """ext4 keeps one block of attributes per inode (no ea_inode): a 16 KiB value does not fit."""
    src = archive(tmp_path, [member("f", attrs={"user.big": b"v" * (16 << 10), "user.small": b"s"})])
    findings = unpack(src, tmp_path / "out")
    assert os.getxattr(tmp_path / "out/f", "user.small") == b"s"
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if fs == "ext2/ext3":
        assert [p.split(" (")[0] for p in dropped(findings)] == ["/f"]


def test_posix_acls_are_kept_and_still_say_what_the_mode_says(tmp_path: Path) -> None:
    """GNU tar --xattrs carries an ACL as system.posix_acl_access (systemd's journal directory has one)."""
    everyone = 0xFFFFFFFF
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, who) for tag, perm, who in [
        (0x01, 7, everyone), (0x02, 5, 1000), (0x04, 5, everyone), (0x10, 5, everyone), (0x20, 0, everyone)])
    src = archive(tmp_path, [member("journal", tarfile.DIRTYPE, {"system.posix_acl_access": acl}, mode=0o750)])
    assert unpack(src, tmp_path / "out") == []
    assert os.getxattr(tmp_path / "out/journal", "system.posix_acl_access") == acl
    assert (tmp_path / "out/journal").stat().st_mode & 0o7777 == 0o750
