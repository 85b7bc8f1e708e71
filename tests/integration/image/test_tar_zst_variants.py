"""A tar.zst of a variant shares all but its new package and dpkg's bookkeeping with the image it varies.

Images are mostly variants of a few bases, and the repository stores each distinct chunk once. A
package spreads its files over /usr/bin, /usr/share/doc, /usr/lib and a directory per locale; in name
order each of those is a change, and a compressed stream carries each change on. generate's tar is in
package order with its times clamped, and compressed as independent frames (rain.image.tarball)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import zstandard

from rain.image.tarball import pack_tar_zst, tar_order
from rain.repository.chunks import cut

pytestmark = pytest.mark.integration
MiB = 1 << 20
EPOCH = 1_700_000_000
LOCALES = ["cs", "de", "es", "fi", "fr", "it", "ja", "nl", "pl", "pt", "ru", "sv"]


def text(size: int, seed: int) -> bytes:
    """Compressible bytes that do not repeat (words drawn at random)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(3000)]
    return b" ".join(rnd.choices(words, k=size // 5))[:size]


def install(root: Path, package: str, size: int, seed: int) -> list[str]:
    """A package the way dpkg leaves one: files in several directories, some through the merged-/usr
    link /lib, an old mtime, and its list in dpkg's database naming every parent directory."""
    files = {f"/usr/bin/{package}": text(size // 4, seed), f"/usr/share/doc/{package}/copyright": text(4096, seed + 1),
             f"/lib/x86_64-linux-gnu/lib{package}.so.1": text(size // 4, seed + 2),
             **{f"/usr/share/locale/{loc}/LC_MESSAGES/{package}.mo": text(size // 2 // len(LOCALES), seed + 3 + i)
                for i, loc in enumerate(LOCALES)}}
    listed = set()
    for inner, data in files.items():
        path = root / inner.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (EPOCH - 86400 * 30, EPOCH - 86400 * 30))
        parent = inner
        while parent != "/":
            listed.add(parent)
            parent = os.path.dirname(parent)
    (root / f"var/lib/dpkg/info/{package}.list").write_text("/.\n" + "".join(f"{p}\n" for p in sorted(listed)))
    (root / f"var/lib/dpkg/info/{package}.md5sums").write_text("".join(
        f"{hashlib.md5(d).hexdigest()}  {p[1:]}\n" for p, d in files.items()))
    with open(root / "var/lib/dpkg/status", "a") as status, open(root / "var/log/dpkg.log", "a") as log:
        status.write(f"Package: {package}\nStatus: install ok installed\nVersion: 1.0\n\n")
        log.write(f"{time.strftime('%F %T')} install {package} 1.0\n")
    return sorted(files)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("usr/lib", "usr/bin", "var/lib/dpkg/info", "var/log", "etc"):
        (root / d).mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "var/lib/dpkg/status").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    for i, package in enumerate(["adduser", "bash", "coreutils", "libc6", "perl-base", "tar", "zlib1g"]):
        install(root, package, 6 * MiB, i * 100)
    return root


def chunks(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return list(cut(f, path.stat().st_size, lambda _: None))


def test_a_one_package_variant_adds_about_its_package_to_the_stored_chunks(base: Path, tmp_path: Path):
    pack_tar_zst(base, tmp_path / "base.tar.zst", EPOCH)
    install(base, "hello", MiB, 9000)  # between "coreutils" and "libc6", in 15 directories
    pack_tar_zst(base, tmp_path / "variant.tar.zst", EPOCH)

    stored = set(chunks(tmp_path / "base.tar.zst"))
    variant = chunks(tmp_path / "variant.tar.zst")
    new = sum(len(c) for c in variant if c not in stored)
    size = sum(len(c) for c in variant)
    # the package (about 0.4 MiB compressed), its run of frames' neighbours and the tail (status, log):
    # in name order, with atime and ctime in the headers and --rsyncable, every chunk was new
    assert new <= 0.25 * size, f"{new} of {size} bytes of the variant are new chunks"


def test_each_package_is_one_run_and_every_directory_comes_before_what_it_holds(base: Path):
    install(base, "hello", MiB, 9000)
    order = tar_order(base)
    at = {name: i for i, name in enumerate(order)}
    # its files in 15 directories, its database files, and its library listed as /lib/... through the
    # merged-/usr link (so under another name than the entry usr/lib/... it is)
    hello = sorted(at[n] for n in order if "hello" in n)
    assert len(hello) == 18 and "usr/lib/x86_64-linux-gnu/libhello.so.1" in order
    assert hello == list(range(hello[0], hello[0] + len(hello))), "hello's entries are not one run"
    for name in order:
        parent = os.path.dirname(name)
        assert not parent or at[parent] < at[name], f"{name} comes before its directory"
    assert order[-2:] == ["var/lib/dpkg/status", "var/log/dpkg.log"]  # what no package owns, last


def test_the_same_tree_packs_to_the_same_bytes_whenever_and_wherever_it_is_packed(base: Path, tmp_path: Path):
    pack_tar_zst(base, tmp_path / "one.tar.zst", EPOCH)
    copy = tmp_path / "elsewhere" / "root"
    shutil.copytree(base, copy, symlinks=True)  # new ctimes and atimes, new directory mtimes
    (copy / "etc/hostname").touch()
    pack_tar_zst(copy, tmp_path / "two.tar.zst", EPOCH)
    assert (tmp_path / "one.tar.zst").read_bytes() == (tmp_path / "two.tar.zst").read_bytes()

    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((tmp_path / "one.tar.zst").read_bytes()),
                                                      read_across_frames=True).read()
    assert b" atime=" not in tar and b" ctime=" not in tar
    listing = subprocess.run(["tar", "--zstd", "-tvf", str(tmp_path / "one.tar.zst"), "--full-time"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    stamps = {" ".join(line.split()[3:5]) for line in listing}
    assert max(stamps) <= time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH)), "an mtime past the epoch"
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH - 86400 * 30)) in stamps  # packages' own kept


def test_the_archive_unpacks_with_plain_tar_to_the_same_tree(base: Path, tmp_path: Path):
    pack_tar_zst(base, tmp_path / "img.tar.zst", EPOCH)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-C", str(out), "-xpf", str(tmp_path / "img.tar.zst")], check=True)
    assert (out / "lib").is_symlink() and os.readlink(out / "lib") == "usr/lib"
    for path in base.rglob("*"):
        twin = out / path.relative_to(base)
        assert twin.is_symlink() == path.is_symlink() and twin.is_dir() == path.is_dir()
        if path.is_file() and not path.is_symlink():
            assert twin.read_bytes() == path.read_bytes(), path


def test_rains_own_unpackers_read_every_frame(base: Path, tmp_path: Path):
    """The registrar's unpacker and clone's read the archive with zstandard, not the zstd tool: all of a Rain
    tar.zst's dozens of frames, to the last package and the last file."""
    from rain.generate.bootstrap.clone import safe_unpack
    from rain.image.untar import open_tar

    pack_tar_zst(base, tmp_path / "img.tar.zst", EPOCH)
    with open_tar(tmp_path / "img.tar.zst", "tar.zst") as tf:
        names = {m.name.removeprefix("./") for m in tf}
    assert {"usr/bin/zlib1g", "var/log/dpkg.log"} <= names  # the last package and the last file of all
    out = tmp_path / "cloned"
    out.mkdir()
    safe_unpack(tmp_path / "img.tar.zst", out)
    assert (out / "var/log/dpkg.log").read_bytes() == (base / "var/log/dpkg.log").read_bytes()
    assert (out / "usr/bin/zlib1g").read_bytes() == (base / "usr/bin/zlib1g").read_bytes()
