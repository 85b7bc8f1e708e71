"""Fuzzing the vetting rules with hostile trees (hypothesis, derandomized for CI, about 30-60 s).

Each example builds a small image tree from generated pieces: sshd_config files with Include loops and
globs, account files, symlinks (absolute, relative, climbing out of the root to a canary directory on the
'host', looping), FIFOs where files are expected, huge sparse files and deep directories. Every vetting
must end within the per-example deadline, never change anything outside the tree, and never report
anything it could only have learnt from the canary directory (whose names and contents carry a marker).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.images import PRIVATE_KEY, make_tree

from rain.register.models import Severity, VetPolicy
from rain.register.vet import vet_tree

MARKER = "canary-9b1e77"
ALL_RULES = VetPolicy("fuzz", Severity.INFO, frozenset({"kernel", "nvme_ena"}))
DEADLINE = 5.0  # seconds per vetting; a clean tree takes well under 0.1 s

pytestmark = pytest.mark.timeout(300)  # a hang (FIFO read, Include loop) fails instead of stalling CI

PLACES = ["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/a.conf", "/etc/ssh/sshd_config.d", "/etc/ssh/b.conf",
          "/etc/ssh", "/etc/shadow", "/etc/passwd", "/root/.ssh/authorized_keys", "/root/.ssh", "/root/.ssh/id_rsa",
          "/home/alice/.bash_history", "/home/alice", "/etc/apt/sources.list", "/etc/apt/sources.list.d/x.list",
          "/etc/apt/apt.conf.d", "/lib/modules/6.1.0-test-amd64/modules.dep", "/lib/modules/6.1.0-test-amd64",
          "/boot/vmlinuz-6.1.0-test-amd64", "/etc/yum.repos.d/x.repo", "/opt/app/key.pem", "/usr/local/bin/tool"]


def config_lines(canary: Path) -> st.SearchStrategy[str]:
    return st.sampled_from([
        "Include /etc/ssh/sshd_config", "Include sshd_config", "Include /etc/ssh/*", "Include *",
        "Include /etc/ssh/sshd_config.d/*.conf", "Include b.conf /etc/ssh/b.conf", "Include /etc/ssh/**",
        f"Include {canary}/*", f"Include ../../../../../../..{canary}/*", "Include /etc/ssh/link/*",
        "PermitRootLogin yes", "PasswordAuthentication yes", "Match User x", "root::19000:0:99999:7:::",
        "toor:x:0:0::/root:/bin/sh", "root:$6$rounds=999999999$s$h:1:0:::::", "deb [trusted=yes] http://x/ a b",
        "kernel/drivers/nvme/host/nvme.ko: ../../../../etc/shadow", PRIVATE_KEY.strip(), "",
    ])


def pieces(canary: Path) -> st.SearchStrategy[tuple[str, str, str]]:
    """(kind, place inside the image, argument)."""
    text = st.lists(config_lines(canary), max_size=6).map("\n".join)
    link = st.sampled_from([str(canary), f"{canary}/sshd-{MARKER}.conf", "../" * 12 + str(canary).lstrip("/"),
                            "/etc/ssh/sshd_config", "sshd_config", ".", "..", "/", "loop", "/etc/ssh/link",
                            f"/proc/self/root{canary}"])
    place = st.sampled_from(PLACES)
    return st.one_of(
        st.tuples(st.just("file"), place, text),
        st.tuples(st.just("link"), place, link),
        st.tuples(st.just("link"), st.just("/etc/ssh/link"), link),
        st.tuples(st.just("fifo"), place, st.just("")),
        st.tuples(st.just("huge"), place, st.just("")),
        st.tuples(st.just("deep"), st.sampled_from(["/opt", "/etc/ssh", "/home/alice"]),
                  st.integers(1, 300).map(str)),
    )


def clear(path: Path) -> None:
    if path.is_symlink() or path.exists() and not path.is_dir():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def place_piece(root: Path, kind: str, inner: str, arg: str) -> None:
    path = root / inner.lstrip("/")
    if not os.path.realpath(path.parent).startswith(str(root) + os.sep):
        return  # a link laid earlier moved this place off the tree: building it would write outside
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clear(path)
    except OSError:
        return  # a FIFO or file laid earlier stands where a directory would go
    if kind == "file":
        path.write_text(arg + "\n")
    elif kind == "link":
        os.symlink(arg, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(8 << 30)  # sparse: 8 GiB claimed, nothing written
    else:
        deep = path
        for _ in range(int(arg)):
            deep = deep / "d"
        deep.mkdir(parents=True)
        (deep / "id_rsa").write_text(PRIVATE_KEY)


def make_canary(base: Path) -> Path:
    canary = base / "canary"
    canary.mkdir()
    (canary / f"sshd-{MARKER}.conf").write_text(f"PermitRootLogin yes\nInclude {canary}/*\n")
    (canary / f"id_{MARKER}").write_text(PRIVATE_KEY)
    (canary / "shadow").write_text(f"{MARKER}::19000:0:99999:7:::\n")
    os.mkfifo(canary / "fifo")  # a rule following a link here and reading would hang
    return canary


def snapshot(base: Path, skip: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Everything under `base` except the image trees: mode, owner, mtime, link count, content hash."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == skip:
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if Path(p) == skip:
                continue  # gains and loses one tree per example
            s = os.lstat(p)
            digest = ""
            if stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            seen[p] = (s.st_mode, s.st_uid, s.st_mtime_ns, s.st_nlink, digest)
    return seen


def test_vetting_hostile_trees_is_bounded_and_never_reads_the_host(tmp_path):
    canary = make_canary(tmp_path)
    trees = tmp_path / "trees"
    trees.mkdir()
    before = snapshot(tmp_path, trees)

    @settings(max_examples=150, derandomize=True, deadline=timedelta(seconds=DEADLINE), database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(pieces(canary), min_size=1, max_size=8))
    def vet_one(plan: list[tuple[str, str, str]]) -> None:
        root = Path(tempfile.mkdtemp(dir=trees)) / "root"
        make_tree(root)
        try:
            for kind, inner, arg in plan:
                place_piece(root, kind, inner, arg)
            start = time.monotonic()
            report = vet_tree(root, "fuzz", ALL_RULES, "fuzz")
            assert time.monotonic() - start < DEADLINE
            assert MARKER not in report.model_dump_json()
        finally:
            shutil.rmtree(root.parent)

    vet_one()
    assert snapshot(tmp_path, trees) == before
