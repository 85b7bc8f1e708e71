"""An image root as a tar.zst that variants of it share: same order, same times, frames cut by content.

Most images at a site are variants of a few bases (one more package, a
weekly rebuild), and the repository stores each distinct chunk once. The tar
is made so that a variant differs from its base only where its content does:

- **Grouped by package.** Directories no package owns come first, then each
  package's files (dpkg's lists) in package-name order, then the files no
  package owns (dpkg's status, logs, caches). A package added to an image is
  one run of new entries, not one in each of /usr/bin, /usr/share/doc,
  /usr/share/man and every locale directory. A parent directory always comes
  before what is in it (dpkg lists every parent of a package's files, and the
  first package in name order that lists a directory owns it; one named only
  through a link is moved up to where it is first needed). A tree without
  dpkg's database is packed in name order.
- **Times that do not move.** No atime or ctime (they say when the build ran,
  not what is in the image), and every mtime clamped to the source date epoch
  (SOURCE_DATE_EPOCH, else `packaged_epoch`: the newest time among the files
  the base system's packages shipped, so the same package versions give the
  same date on any day, and variants of one base the same date): files the
  build itself wrote get that date, files from packages keep theirs (those
  of packages newer than the base system get that date too).
- **Frames cut by content.** The tar is cut by FastCDC into pieces of about
  1 MiB and each is compressed as its own zstd frame (what zchunk does). A
  change spoils only the frames it touches; `zstd --rsyncable` still carried
  each change on to the end of its multi-MiB job. The repository cuts such a
  file after whole frames (rain.repository.frames). The file is an ordinary
  .tar.zst: `zstd -d` and `tar --zstd` read concatenated frames.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

import zstandard
from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc

from rain.errors import BuildError
from rain.host.command import SAFE_PATH
from rain.image.formats import TAR_OPTS
from rain.image.rootfs import LinkLoop, RootFS, walk_tree

FRAME = 1 << 20
"""Average tar bytes per zstd frame: about 0.3-0.5 MiB compressed, so a repository chunk (frames run to at
least 256 KiB) holds one to three frames."""
LEVEL = 3
_WINDOW = 16 * FRAME  # tar bytes cut at a time; a cut is final once 4 * FRAME follow it
_LIST_MAX = 16 << 20  # bytes read of one dpkg list: a package lists tens of KiB, a damaged list never floods
DETERMINISTIC = ["--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime", "--no-recursion",
                 "--null", "--verbatim-files-from"]


def pack_tar_zst(root: Path, dest: Path, epoch: int | None = None) -> None:
    """root as dest, a tar.zst of independent zstd frames in package order; mtimes clamped to `epoch`."""
    tmp = dest.with_name(dest.name + ".part")
    with tempfile.NamedTemporaryFile(prefix=".names-", dir=dest.parent) as names, \
            tempfile.TemporaryFile() as err:
        names.write(b"".join(name.encode("utf-8", "surrogateescape") + b"\0"
                             for name in [".", *(f"./{e}" for e in tar_order(root))]))
        names.flush()
        clamp = ["--mtime", f"@{epoch}", "--clamp-mtime"] if epoch is not None else []
        argv = ["tar", "-C", str(root), *TAR_OPTS, *DETERMINISTIC, *clamp, "-T", names.name, "-cf", "-"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env={"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8"}, start_new_session=True)
        try:
            assert proc.stdout is not None
            with open(tmp, "wb") as out:
                compress_frames(proc.stdout, out)
            proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()][-3:]
                raise BuildError(f"packing tar.zst failed (tar exit {proc.returncode}): " + " | ".join(lines),
                                 hint="check free disk space and the build log")
            os.replace(tmp, dest)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tmp.unlink(missing_ok=True)


def compress_frames(src: IO[bytes], out: IO[bytes], level: int = LEVEL) -> None:
    """src's bytes to out as zstd frames, one per content-defined piece, compressed two at a time."""
    with ThreadPoolExecutor(2) as pool:  # zstandard lets go of the GIL while it compresses
        pending: list[Future[bytes]] = []
        for piece in _pieces(src):
            pending.append(pool.submit(_compress, level, piece))
            if len(pending) > 4:
                out.write(pending.pop(0).result())
        for future in pending:
            out.write(future.result())


def _compress(level: int, piece: bytes) -> bytes:
    # one compressor per call: a ZstdCompressor is not safe to share between threads
    return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compress(piece)


def _pieces(src: IO[bytes]) -> Iterator[bytes]:
    pending = b""
    while True:
        data = src.read(_WINDOW - len(pending))
        window = pending + data
        if not window:
            return
        end = 0
        for piece in _fastcdc(window, FRAME // 4, FRAME, FRAME * 4):
            if data and piece.offset + FRAME * 4 > len(window):
                break  # more bytes may move this cut
            end = piece.offset + piece.length
            yield window[piece.offset:end]
        pending = window[end:]
        if not data and not pending:
            return


def tar_order(root: Path) -> list[str]:
    """The tree's entries ("etc/passwd" style), in the order the tar holds them (see the module's account)."""
    entries = {rel[1:]: st.st_mode for rel, st in walk_tree(root)}
    owner = _owners(root)
    if not owner:
        return sorted(entries)
    loose_dirs = sorted(e for e, mode in entries.items() if e not in owner and stat.S_ISDIR(mode))
    owned = sorted((owner[e], e) for e in entries if e in owner)
    loose_files = sorted(e for e, mode in entries.items() if e not in owner and not stat.S_ISDIR(mode))
    return _parents_first([*loose_dirs, *(e for _, e in owned), *loose_files])


def _parents_first(order: list[str]) -> list[str]:
    """order, with each directory moved up to just before the first entry under it where it came later
    (a directory a list names only through a link, /lib for usr/lib, can belong to a later package)."""
    done: set[str] = set()
    out: list[str] = []
    for name in order:
        if name in done:
            continue
        missing = []
        parent = os.path.dirname(name)
        while parent and parent not in done:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(missing):
            out.append(directory)
            done.add(directory)
        out.append(name)
        done.add(name)
    return out


def packaged_epoch(root: Path) -> int | None:
    """The newest modification time (whole seconds) of the regular files the base system's packages
    (`Priority: required` in dpkg's status: the ones every image of a release has) shipped, as they shipped
    them; None for a tree without dpkg's database or such files.

    dpkg gives a file it unpacks the time it has in the package (that package's build date, which Debian
    clamps to its changelog's) and writes the package's list just after; a packaged file newer than its
    package's list was changed later (by a maintainer script or a recipe's step) and does not count, nor do
    dpkg's own files about a package. So the same package versions give the same epoch whenever, wherever
    and from whichever state of the mirror the build runs, and no time of the build itself gets in. (A tree
    unpacked from one of Rain's images, a clone's base, has its lists and files clamped to that image's
    epoch: the newest files equal their lists' time, count, and the clone keeps the base's epoch.) Only the
    base system's packages count so that the variants of one base (one more package each) share the epoch,
    and with it the bytes of everything the build wrote, and share their chunks in the repository."""
    owner = _owners(root)
    if not owner:
        return None
    tree = RootFS(root)
    try:
        info_dir = tree.resolve("var/lib/dpkg/info")
        listed = {name: os.lstat(os.path.join(info_dir, name)) for name in os.listdir(info_dir)
                  if name.endswith(".list")}
    except (OSError, LinkLoop):
        return None
    base = _required(tree.read_bytes("/var/lib/dpkg/status", _LIST_MAX) or b"")
    real_info = os.path.relpath(info_dir, root) + "/"
    unpacked: dict[str, int] = {}  # package -> when dpkg wrote its list (the earliest, for a multi-arch one)
    for name, st in listed.items():
        package = _package(name)
        if stat.S_ISREG(st.st_mode) and package in base:
            unpacked[package] = min(st.st_mtime_ns, unpacked.get(package, st.st_mtime_ns))
    newest: int | None = None
    for rel, st in walk_tree(root):
        entry = rel[1:]
        shipped_by = owner.get(entry)
        if shipped_by is None or not stat.S_ISREG(st.st_mode) or entry.startswith(real_info):
            continue
        if st.st_mtime_ns <= unpacked.get(shipped_by, -1):
            seconds = st.st_mtime_ns // 1_000_000_000
            newest = seconds if newest is None else max(newest, seconds)
    return newest


def _required(status: bytes) -> set[str]:
    """The installed packages dpkg's status file gives `Priority: required`."""
    names = set()
    for stanza in status.decode("utf-8", "replace").split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line[:1].isspace())
        if fields.get("Priority", "").strip() == "required" and fields.get("Status", "").strip().endswith(" installed"):
            names.add(fields.get("Package", "").strip())
    return names


def _owners(root: Path) -> dict[str, str]:
    """{entry: the first package, in name order, whose dpkg list names it}; a package's own files in dpkg's
    database (info/PKG.list, .md5sums, scripts) count as its. Paths a list names through a directory link
    (/lib/x86_64-linux-gnu/... in a merged-/usr tree) are the real entries they lead to in the image."""
    tree = RootFS(root)
    info = "var/lib/dpkg/info"
    try:
        info_dir = tree.resolve(info)
        names = sorted(os.listdir(info_dir)) if stat.S_ISDIR(os.lstat(info_dir).st_mode) else []
    except (OSError, LinkLoop):
        return {}
    real_info = os.path.relpath(info_dir, root)
    owner: dict[str, str] = {}
    parents: dict[str, str] = {}
    for name in names:
        if not name.endswith(".list"):
            continue
        package = _package(name)
        data = tree.read_bytes(f"/{info}/{name}", _LIST_MAX) or b""
        for line in data.decode("utf-8", "surrogateescape").splitlines():
            path = line.strip("/")
            if not path or "\0" in path:
                continue
            parent, _, base = path.rpartition("/")
            if parent not in parents:
                parents[parent] = _real(tree, root, parent)
            real = f"{parents[parent]}/{base}" if parents[parent] else base
            owner.setdefault(real, package)
    for name in names:
        owner.setdefault(f"{real_info}/{name}", _package(name))
    return owner


def _package(info_name: str) -> str:
    """"libc6:amd64.md5sums" -> "libc6"; "python3.11.list" -> "python3.11"."""
    return info_name.rsplit(".", 1)[0].split(":")[0]


def _real(tree: RootFS, root: Path, inner: str) -> str:
    """The real directory `inner` is in the image, its links followed inside the image ("" for the root)."""
    if not inner:
        return ""
    try:
        real = os.path.relpath(tree.resolve(inner), root)
    except LinkLoop:
        return inner
    return "" if real == "." else real
