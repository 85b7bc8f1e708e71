"""dnf's state in a RHEL image, tidied before packing (rain/generate/bootstrap/dnf_state.py): the history's
times clamped to the epoch and its command lines without this host's paths, the write-ahead log folded in,
dnf's logs emptied, and a link in the image never followed out of it. The end-to-end case (two cold builds
of the rocky recipe, one sha256) is tests/integration/generate/test_generate_rhel.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from rain.generate.bootstrap import dnf_state

BUILD = ("-y --installroot=/var/tmp/rain-build.x/root --releasever=9 --config=/home/u/.local/share/rain/dnf.conf "
         "--setopt=reposdir=/home/u/dnf/repos.d --setopt=cachedir=/home/u/cache --setopt=keepcache=True "
         "install -- rain-probe")


def _history(root: Path, transactions: list[tuple[int, str]]) -> Path:
    """A history database as dnf leaves it: WAL mode, the transactions still in the write-ahead log."""
    scratch = root.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    with closing(sqlite3.connect(scratch / "history.sqlite")) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute("CREATE TABLE trans (id INTEGER PRIMARY KEY, dt_begin INTEGER NOT NULL, dt_end INTEGER, "
                   "cmdline TEXT)")
        db.executemany("INSERT INTO trans (dt_begin, dt_end, cmdline) VALUES (?, ?, ?)",
                       [(at, at + 5, cmd) for at, cmd in transactions])
        db.commit()
        path = root / "var/lib/dnf/history.sqlite"  # copied while dnf still has it open
        path.parent.mkdir(parents=True)
        for suffix in ("", "-wal"):
            (path.parent / f"history.sqlite{suffix}").write_bytes((scratch / f"history.sqlite{suffix}").read_bytes())
    assert (path.parent / "history.sqlite-wal").stat().st_size > 0
    return path


def test_the_history_keeps_no_time_past_the_epoch_and_no_host_path_and_ships_no_wal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = _history(root, [(1_000, "install -- older"), (2_000_000_000, BUILD)])  # a clone's, then the build's
    (root / "var/log").mkdir()
    (root / "var/log/dnf.log").write_text("2026-12-07T00:30:45+0000 INFO /var/tmp/rain-build.x\n")
    (root / "var/log/hawkey.log").symlink_to("/etc/passwd")  # never followed out of the image
    (path.parent / "history.sqlite-shm").write_bytes(b"\0" * 32)

    dnf_state.tidy(root, 1_700_000_000)

    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        rows = db.execute("SELECT dt_begin, dt_end, cmdline FROM trans ORDER BY id").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert rows == [(1_000, 1_005, "install -- older"),
                    (1_700_000_000, 1_700_000_000, "-y --releasever=9 --setopt=keepcache=True install -- rain-probe")]
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.sqlite"], "no -wal, no -shm"
    assert (root / "var/log/dnf.log").read_text() == ""
    assert (root / "var/log/hawkey.log").is_symlink() and Path("/etc/passwd").stat().st_size > 0


def test_without_an_epoch_the_times_stay_and_a_damaged_database_is_left_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = _history(root, [(2_000_000_000, BUILD)])
    dnf_state.tidy(root, None)
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        assert db.execute("SELECT dt_begin, cmdline FROM trans").fetchall() == \
            [(2_000_000_000, "-y --releasever=9 --setopt=keepcache=True install -- rain-probe")]

    rpmdb = root / "var/lib/rpm/rpmdb.sqlite"
    rpmdb.parent.mkdir(parents=True)
    rpmdb.write_bytes(b"not a database" * 100)
    dnf_state.tidy(root, 1)  # a warning, never a failed build
    assert rpmdb.read_bytes() == b"not a database" * 100
