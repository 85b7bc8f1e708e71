"""A base image from the repository is unpacked without letting it touch anything outside the root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from rain.generate.bootstrap.clone import UnsafeArchive, safe_unpack


def make(tmp_path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            payload = (data or {}).get(m.name)
            if payload is not None:
                m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload) if payload is not None else None)
    path = tmp_path / "base.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.mode, m.uid, m.gid = kind, link, mode, 0, 0
    return m


def test_a_normal_root_unpacks_with_modes_and_in_root_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    archive = make(tmp_path, [
        entry("./usr", tarfile.DIRTYPE, mode=0o755), entry("./usr/bin", tarfile.DIRTYPE, mode=0o755),
        entry("./usr/bin/sudo", mode=0o4755), entry("./bin", tarfile.SYMTYPE, "usr/bin"),
        entry("./etc", tarfile.DIRTYPE, mode=0o755),
        entry("./etc/localtime", tarfile.SYMTYPE, "/usr/share/zoneinfo/UTC"),
        entry("./usr/bin/sudoedit", tarfile.LNKTYPE, "./usr/bin/sudo"),
        entry("./dev", tarfile.DIRTYPE, mode=0o755), entry("./dev/null", tarfile.CHRTYPE),
    ], {"./usr/bin/sudo": b"binary"})
    skipped = safe_unpack(archive, root)
    assert skipped == 1 and not (root / "dev/null").exists()
    assert (root / "usr/bin/sudo").stat().st_mode & 0o4000
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "usr/bin/sudoedit").stat().st_ino == (root / "usr/bin/sudo").stat().st_ino


@pytest.mark.parametrize("members", [
    [entry("../outside")],
    [entry("/etc/passwd")],
    [entry("etc", tarfile.DIRTYPE), entry("etc/x", tarfile.SYMTYPE, "../../../../etc/shadow")],
    [entry("h", tarfile.LNKTYPE, "../../etc/shadow")],
], ids=["dotdot", "absolute", "escaping-symlink", "escaping-hardlink"])
def test_escapes_are_refused(tmp_path: Path, members: list[tarfile.TarInfo]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafeArchive):
        safe_unpack(make(tmp_path, members), root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.tar.zst", "root"]


def test_nothing_is_written_through_a_symlinked_directory(tmp_path: Path) -> None:
    root, victim = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    victim.mkdir()
    archive = make(tmp_path, [entry("d", tarfile.SYMTYPE, "/" + str(victim).lstrip("/")),
                              entry("d/planted")], {"d/planted": b"x"})
    with pytest.raises(UnsafeArchive, match="through a link"):
        safe_unpack(archive, root)
    assert list(victim.iterdir()) == []


def _snapshot(path: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink


@pytest.mark.parametrize("kind", ["directory-over-symlink", "hard-link-to-host-file"])
def test_a_base_image_cannot_change_host_files(tmp_path: Path, kind: str) -> None:
    """The clone had its own unpacker, which chmod/chowned the host directory behind `d -> /host/dir` + `d/`,
    and made a hard link to a host file; it now goes through the registrar's unpacker and fails the build."""
    root, canary = tmp_path / "root", tmp_path / "canary"
    root.mkdir()
    canary.mkdir(mode=0o755)
    (canary / "secret").write_text("host file")
    before = {p: _snapshot(p) for p in (canary, canary / "secret")}
    if kind == "directory-over-symlink":
        over = entry("d", tarfile.DIRTYPE, mode=0o777)
        over.uid = over.gid = 4321
        members = [entry("d", tarfile.SYMTYPE, str(canary)), over]
    else:
        link = entry("h", tarfile.LNKTYPE, str(canary / "secret"), mode=0o777)
        link.uid = 4321
        members = [link]
    with pytest.raises(UnsafeArchive, match="base: member /"):
        safe_unpack(make(tmp_path, members), root)
    assert {p: _snapshot(p) for p in before} == before
    assert (canary / "secret").read_text() == "host file"
