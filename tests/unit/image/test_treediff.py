"""treediff: two roots compared file by file, naming what differs, never following a link."""

from __future__ import annotations

import os
from pathlib import Path

from rain.image.treediff import compare


def _tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("node\n")
    (root / "etc" / "motd").write_text("welcome\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF" + b"\0" * 100)
    os.chmod(root / "usr" / "bin" / "tool", 0o755)
    os.symlink("/etc/hostname", root / "etc" / "name")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    return root


def test_the_same_trees_have_no_differences(tmp_path):
    assert compare(_tree(tmp_path / "a"), _tree(tmp_path / "b")) == []


def test_each_kind_of_difference_is_named_in_path_order(tmp_path):
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    (b / "etc" / "motd").write_text("welcome!\n")  # one byte more
    (b / "etc" / "hostname").write_text("nodf\n")  # same size, other bytes
    os.chmod(b / "usr" / "bin" / "tool", 0o4755)
    (b / "etc" / "name").unlink()
    os.symlink("/etc/motd", b / "etc" / "name")
    (a / "only-stored").write_text("x")
    (b / "only-rebuilt").write_text("y")
    os.setxattr(b / "etc" / "hostname", "user.rain", b"1")
    for path in (b / "etc" / "motd", b / "etc" / "hostname", b / "usr" / "bin" / "tool"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    os.utime(b / "etc" / "name", (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    os.utime(b / "etc", (1_700_000_000, 1_700_000_000))  # its entries changed above
    os.utime(a / "etc", (1_600_000_000, 1_600_000_000))

    found = [str(d) for d in compare(a, b)]
    assert found[0] == "/etc: modification time 1600000000 → 1700000000"
    assert found[1].startswith("/etc/hostname: content (sha256 ") and "extended attributes (user.rain)" in found[1]
    assert found[2] == "/etc/motd: content (8 → 9 bytes)"
    assert found[3] == "/etc/name: target /etc/hostname → /etc/motd"
    assert found[4] == "/only-rebuilt: only in the rebuild"
    assert found[5] == "/only-stored: only in the stored image"
    assert found[6] == "/usr/bin/tool: mode 0755 → 4755"
    assert len(found) == 7


def test_a_link_out_of_the_root_is_compared_as_a_link_and_the_list_is_bounded(tmp_path):
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    outside = tmp_path / "outside"
    outside.write_text("host file")
    os.symlink(str(outside), a / "escape")
    os.mkfifo(b / "escape")  # a FIFO is never opened (opening one would hang)
    found = compare(a, b)
    assert [str(d) for d in found] == ["/escape: a symlink in the stored image, a FIFO in the rebuild"]
    for n in range(30):
        (b / f"extra{n:02d}").write_text("")
    assert len(compare(a, b, limit=5)) == 5
