"""What dnf leaves in an image besides the packages: its history database and its logs, read and tidied on
this host.

dnf's history (/var/lib/dnf/history.sqlite) says which repository each package came from (read here for the
manifest and a lock file) and why it was installed (what `dnf autoremove` goes by). It also holds each
transaction's times and command line, and the build's transaction's command line names this host's work
directory and package cache; dnf's logs in /var/log say the same, with the build's times. rpm's database and
the history are SQLite in WAL mode, and a write-ahead log's header holds random salts. So before packing
(`tidy`): the logs are emptied; the history's times are clamped to the source date epoch, and its command
lines lose every option that names a path on this host (and the file is rebuilt from its rows, so the
longer lines leave no free space behind that tells them apart); both databases have their write-ahead log
folded in and removed (dnf and rpm make a new one when they next open them).

Everything is done on copies read through the image (RootFS: its links resolve inside it) and written back
the same way; nothing in the tree runs, nor any of a database's own SQL (trusted_schema off).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from rain.generate.bootstrap.base import Package
from rain.image.rootfs import RootFS

log = logging.getLogger(__name__)

HISTORY = "/var/lib/dnf/history.sqlite"
RPMDB = "/var/lib/rpm/rpmdb.sqlite"
LOGS = ("/var/log/dnf.log", "/var/log/dnf.rpm.log", "/var/log/dnf.librepo.log", "/var/log/hawkey.log")
DB_MAX = 256 << 20
"""Bytes of a database read (a long-lived machine's history is a few MiB, rpm's of a full system tens)."""
_FROM_REPO = ("SELECT r.name, r.epoch, r.version, r.release, r.arch, repo.repoid FROM trans_item ti "
              "JOIN rpm r ON r.item_id = ti.item_id JOIN repo ON repo.id = ti.repo_id ORDER BY ti.id")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


def repos(root: Path, installed: list[Package]) -> dict[str, str]:
    """{package: the repository its installed version came from}: a recipe repository's name, or "mirror".
    {} where dnf kept no history or it cannot be read: a build never fails for it."""
    rows: list[tuple[str, int, str, str, str, str]] = []
    try:
        with _copy(RootFS(root), HISTORY) as db:
            if db is not None:
                rows = db.execute(_FROM_REPO).fetchall()
    except sqlite3.Error as e:
        log.warning("dnf's history database in the image cannot be read (%s): no repository per package", e)
    came_from: dict[tuple[str, str, str], str] = {}
    for name, epoch, version, release, arch, repo in rows:  # in transaction order: the last one counts
        evr = f"{version}-{release}" if str(epoch) in ("0", "") else f"{epoch}:{version}-{release}"
        came_from[(str(name), evr, str(arch))] = str(repo)
    out = {}
    for p in installed:
        repo = came_from.get((p.name, p.version, p.arch), "")
        repo = repo.removeprefix("rain-")  # Rain names the recipe's repositories rain-NAME in dnf.conf
        if _REPO_ID.match(repo):
            out[p.name] = repo
    return out


def tidy(root: Path, epoch: int | None) -> None:
    """dnf's logs emptied, its history's build-only details made the same for every build of the same inputs,
    and rpm's and dnf's databases without their write-ahead logs (see the module's doc)."""
    tree = RootFS(root)
    for name in LOGS:
        if tree.is_regular(name):
            tree.write_bytes(name, b"", _mode(tree, name))
    _rewrite(tree, HISTORY, lambda db: _forget_the_build(db, epoch))
    _rewrite(tree, RPMDB, lambda db: None)


def _forget_the_build(db: sqlite3.Connection, epoch: int | None) -> None:
    for trans_id, cmdline in db.execute("SELECT id, cmdline FROM trans").fetchall():
        if isinstance(cmdline, str):
            db.execute("UPDATE trans SET cmdline = ? WHERE id = ?", (_without_host_paths(cmdline), trans_id))
    if epoch is not None:  # clamped, as the files' times are: a cloned image's older transactions keep theirs
        db.execute("UPDATE trans SET dt_begin = MIN(dt_begin, ?), dt_end = MIN(dt_end, ?)", (epoch, epoch))
    db.commit()
    db.execute("VACUUM")  # the pages rebuilt from the rows: shorter command lines leave no trace of the longer


def _without_host_paths(cmdline: str) -> str:
    """dnf's recorded command line without the options that name paths (--installroot=, --config=, the
    reposdir and cachedir settings): the rest (what was installed, and how) stays."""
    return " ".join(word for word in cmdline.split(" ") if not (word.startswith(("-", "/")) and "/" in word))


def _rewrite(tree: RootFS, name: str, edit: Callable[[sqlite3.Connection], None]) -> None:
    mode = _mode(tree, name)
    try:
        with _copy(tree, name) as db:
            if db is None:
                return
            edit(db)
            db.commit()
            db.execute("PRAGMA journal_mode = DELETE")  # the write-ahead log folded in, and no new one
            copy = Path(db.execute("PRAGMA database_list").fetchone()[2])
            db.close()
            data = copy.read_bytes()
    except sqlite3.Error as e:
        log.warning("%s in the image cannot be tidied (%s): left as dnf wrote it", name, e)
        return
    tree.write_bytes(name, data, mode)
    for suffix in ("-wal", "-shm"):
        tree.remove(name + suffix)


@contextmanager
def _copy(tree: RootFS, name: str) -> Iterator[sqlite3.Connection | None]:
    """A connection to a copy of the image's database `name` and its write-ahead log; None when it has none
    (or one past DB_MAX, which is not read)."""
    with tempfile.TemporaryDirectory(prefix="rain-dnf-") as tmp:
        if not _copied(tree, name, Path(tmp, "db")):
            yield None
            return
        with closing(sqlite3.connect(Path(tmp, "db"))) as db:
            db.execute("PRAGMA trusted_schema = OFF")  # the file is the image's: run none of its SQL
            yield db


@contextmanager
def rpmdb_copy(root: Path) -> Iterator[Path | None]:
    """A directory holding a copy of the tree's rpm database (and its write-ahead log), for rpm's
    --dbpath; None where the tree has none."""
    with tempfile.TemporaryDirectory(prefix="rain-rpmdb-") as tmp:
        yield Path(tmp) if _copied(RootFS(root), RPMDB, Path(tmp, "rpmdb.sqlite")) else None


def _copied(tree: RootFS, name: str, to: Path) -> bool:
    """The image's database `name` and its write-ahead log (what was not yet written back) copied to `to`;
    False where it has none, or one past DB_MAX (not read)."""
    for suffix in ("", "-wal"):
        data = tree.read_bytes(name + suffix, DB_MAX + 1)
        if data is None and not suffix or data is not None and len(data) > DB_MAX:
            return False
        if data is not None:
            to.with_name(to.name + suffix).write_bytes(data)
    return True


def _mode(tree: RootFS, name: str) -> int:
    try:
        return os.lstat(tree.resolve(name)).st_mode & 0o7777
    except OSError:
        return 0o644
