"""Hostile trees the vetting rules must survive: sshd_config Include loops, deep directories, password
hashes that cost hours to check. Each vetting must finish quickly and still report what sshd would do."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.images import make_tree

from rain.image.rootfs import RootFS
from rain.register.models import Severity, VetPolicy
from rain.register.rules.ssh import sshd_options
from rain.register.vet import vet_tree

STRICT = VetPolicy("hpc", Severity.MEDIUM, frozenset({"kernel"}))

pytestmark = pytest.mark.timeout(60)  # the defects were hangs: a hang fails here instead of stalling CI


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def rules_of(root: Path) -> set[str]:
    return {f.rule for f in vet_tree(root, "x", STRICT, "hpc").findings}


@pytest.mark.parametrize("config, extra", [
    ("Include /etc/ssh/sshd_config\nPermitRootLogin yes\n", {}),
    ("Include sshd_config\nPermitRootLogin yes\n", {}),  # relative names are under /etc/ssh, as in sshd
    ("Include /etc/ssh/a.conf\n", {"/etc/ssh/a.conf": "Include b.conf\nPermitRootLogin yes\n",
                                   "/etc/ssh/b.conf": "Include /etc/ssh/a.conf /etc/ssh/sshd_config\n"}),
    ("Include /etc/ssh/*\nPermitRootLogin yes\n", {}),  # the glob matches the file itself
])
def test_sshd_config_include_loops_finish_and_still_report(tmp_path, config, extra):
    root = make_tree(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", config)
    for rel, text in extra.items():
        write(root, rel, text)
    start = time.monotonic()
    assert "sshd-root-login" in rules_of(root)
    assert time.monotonic() - start < 10


def test_include_is_read_where_it_stands_so_a_drop_in_wins(tmp_path):
    """sshd reads an Include in place and keeps the first value: Debian's drop-in at the top wins."""
    root = make_tree(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\n")
    write(root, "/etc/ssh/sshd_config.d/50-cloud.conf", "PermitRootLogin yes\n")
    assert "sshd-root-login" in rules_of(root)


def test_include_depth_stops_where_sshd_stops(tmp_path):
    """sshd refuses Includes nested deeper than 16 (servconf.c SERVCONF_MAX_DEPTH): Rain reads no deeper."""
    root = make_tree(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include c1.conf\n")
    for i in range(1, 40):
        write(root, f"/etc/ssh/c{i}.conf", f"Include c{i + 1}.conf\nX{i} set\n")
    options = sshd_options(RootFS(root))
    assert "x1" in options and "x15" in options and "x30" not in options


def _chain(top: Path, depth: int, build: bool) -> None:
    """Make (or remove) top/d/d/.../d with a setuid file at the bottom, one relative step at a time, so
    neither this test nor pytest's recursive tmp cleanup needs deep recursion or long paths."""
    cwd = os.getcwd()
    os.chdir(top)
    try:
        for _ in range(depth):
            if build:
                os.mkdir("d")
            os.chdir("d")
        if build:
            with open("rootme", "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod("rootme", 0o4755)
            return
        os.unlink("rootme")
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(cwd)


def test_a_very_deep_tree_is_walked_to_the_bottom(tmp_path):
    """Python 3.11's os.walk recursed: 1200 nested directories crashed vetting with RecursionError."""
    root = make_tree(tmp_path / "r")
    (root / "opt").mkdir()
    _chain(root / "opt", 1200, build=True)
    try:
        assert "setuid-unlisted" in rules_of(root)
    finally:
        _chain(root / "opt", 1200, build=False)


def test_password_hash_with_a_huge_cost_does_not_stall_vetting(tmp_path):
    """$6$rounds=999999999 makes one crypt() call take many minutes. The known-password rule does not hash
    such a hash, and does not let it pass either: the accounts are reported as not checked."""
    root = make_tree(tmp_path / "r")
    write(root, "/etc/shadow", "root:$6$rounds=999999999$saltsalt$" + "x" * 86 + ":19000:0:99999:7:::\n"
          "daemon:$2b$31$" + "a" * 53 + ":19000:0:99999:7:::\n")
    start = time.monotonic()
    report = vet_tree(root, "x", STRICT, "hpc")
    assert time.monotonic() - start < 10
    [unchecked] = [f for f in report.findings if f.rule == "known-password"]
    assert sorted(p.split(" ")[0] for p in unchecked.paths) == ["/etc/shadow:daemon", "/etc/shadow:root"]
    assert all("not checked" in p for p in unchecked.paths)
    assert report.verdict == "fail"


def test_a_symlink_loop_where_a_rule_reads_is_a_missing_file_not_a_failed_vetting(tmp_path):
    """Found by the fuzz test: `sshd_config -> a.conf -> sshd_config` made every sshd rule raise, so an
    image could make vetting itself fail; sshd would find no config there, and neither do the rules."""
    root = make_tree(tmp_path / "r")
    ssh = root / "etc/ssh"
    for name in ("sshd_config", "a.conf"):
        (ssh / name).unlink(missing_ok=True)
    os.symlink("a.conf", ssh / "sshd_config")
    os.symlink("/etc/ssh/sshd_config", ssh / "a.conf")
    (ssh / "sshd_config.d").mkdir(exist_ok=True)
    os.symlink("loop", ssh / "sshd_config.d/loop")
    tree = RootFS(root)
    assert tree.read_text("/etc/ssh/sshd_config") is None and not tree.exists("/etc/ssh/sshd_config")
    assert tree.glob("/etc/ssh/sshd_config.d/loop", "*") == []
    rules_of(root)  # finishes with a report
