"""Running commands inside register's unpacked copy, and installing packages into it.

The chroot set-up is generate's own (LocalBuilder + data/chroot.sh): /proc,
/sys and a private /dev mounted, policy-rc.d so no service starts, the host's
resolver lent; `ImageChroot` undoes all of it when its block ends, on
failure and on Ctrl-C alike. Packages come from the image's own distribution
through generate's mirror (the `mirror` setting, else the host's apt sources)
and generate's shared package cache; apt's lists and downloads live in a
private directory inside the copy that is removed afterwards, so the image's
own apt configuration, lists and caches are left as they were.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rain.config import Settings
from rain.errors import BuildError, InvalidInput, Unreachable
from rain.generate.bootstrap.base import Package
from rain.generate.bootstrap.debian import APT_MISSING, APT_UNREACHABLE, apt_components, dpkg_installed
from rain.generate.builders.base import BuildSpec, Handle
from rain.generate.builders.local import LocalBuilder
from rain.generate.cache import Cache
from rain.generate.command import Result
from rain.generate.mirror import host_apt_mirror
from rain.generate.recipe import OsFamily
from rain.image.rootfs import RootFS

KEYRINGS = {OsFamily.DEBIAN: "/usr/share/keyrings/debian-archive-keyring.gpg",
            OsFamily.UBUNTU: "/usr/share/keyrings/ubuntu-archive-keyring.gpg"}
_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+\.deb) \d+")


@dataclass(frozen=True)
class Distro:
    """What the copy says it is (from /etc/os-release and dpkg), to pick the mirror and the cache."""

    family: OsFamily
    release: str
    arch: str


class ImageChroot:
    """Commands inside the copy at `root`, as root; the set-up is undone when `session` ends."""

    def __init__(self, builder: LocalBuilder, handle: Handle) -> None:
        self.builder, self.handle = builder, handle
        self.root = handle.root

    def run(self, argv: Sequence[str], what: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self.builder.run(self.handle, argv, env=env, what=what)

    def exists(self, path: str) -> bool:
        return self.builder.exists(self.handle, path)


@contextmanager
def session(root: Path, log_file: Path | None = None) -> Iterator[ImageChroot]:
    """A chroot into `root`; mounts and policy files are gone when the block ends, however it ends."""
    with tempfile.TemporaryDirectory(prefix="rain-chroot-") as work:
        spec = BuildSpec(name="register", workdir=Path(work), debian=True, log_file=log_file)
        builder = LocalBuilder()
        builder.start(spec)  # checks for root and the tools
        handle = Handle(spec=spec, root=root, inner_root=str(root))
        try:
            yield ImageChroot(builder, handle)
        finally:
            builder.stop(handle)


def distro(root: Path) -> Distro:
    """The copy's distribution; an RPM-family or unknown image gets a one-line error saying what to do."""
    fields = os_release(root)
    ident = fields.get("ID", "")
    family = next((f for f in OsFamily if f.value == ident), None)
    if family is None or not family.is_debian:
        name = fields.get("PRETTY_NAME") or ident or "an image without /etc/os-release"
        raise InvalidInput(f"register can install packages only into Debian-family images, not {name}",
                           hint="add cloud-init and cloud-utils-growpart (or your cloud's agent) to the "
                                "recipe's packages and generate the image again")
    release = fields.get("VERSION_CODENAME", "")
    if not release:
        raise InvalidInput(f"{fields.get('PRETTY_NAME', ident)}: /etc/os-release names no VERSION_CODENAME",
                           hint="add cloud-init and cloud-guest-utils to the recipe's packages instead")
    return Distro(family, release, _dpkg_arch(root))


def os_release(root: Path) -> dict[str, str]:
    tree = RootFS(root)
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if tree.exists(path):
            fields = {}
            for line in (tree.read_text(path) or "").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip("'\"")
            return fields
    return {}


def _dpkg_arch(root: Path) -> str:
    """dpkg's architecture from its status file (the Architecture of dpkg itself)."""
    for p in dpkg_installed(root):
        if p.name == "dpkg":
            return p.arch
    raise InvalidInput("the image has no dpkg database: cannot tell its architecture",
                       hint="register installs packages only into Debian-family images with dpkg")


def install(chroot: ImageChroot, packages: Sequence[str], settings: Settings) -> list[Package]:
    """apt-get install `packages` (no recommends) into the copy; returns every package that was added."""
    dist = distro(chroot.root)
    mirror = (settings.mirror or host_apt_mirror(dist.family) or "").rstrip("/")
    if not mirror:
        raise InvalidInput(f"no {dist.family} mirror to install {', '.join(packages)} from",
                           hint="set the `mirror` setting (fg-image config) or add a deb source to this host's apt")
    cache = Cache.for_data(settings.data_path).packages_dir_for(dist.family, dist.release, dist.arch)
    before = {p.name for p in dpkg_installed(chroot.root)}
    with _apt_dir(chroot, dist, mirror) as apt:
        _apt(chroot, apt, ["update"], dist, mirror, "apt-get update")
        wanted = ["install", "-y", "--no-install-recommends", "--", *packages]
        uris = _apt(chroot, apt, ["--print-uris", *wanted], dist, mirror, "resolving packages")
        archives = apt.outer / "archives"
        for line in uris.output.splitlines():
            m = _URI.match(line)
            if m and (cache / m["file"]).is_file() and not (cache / m["file"]).is_symlink():
                _link(cache / m["file"], archives / m["file"])
        _apt(chroot, apt, ["-o", "APT::Keep-Downloaded-Packages=true", *wanted], dist, mirror,
             "installing " + ", ".join(packages))
        Cache.link_packages(archives, cache, ".deb")
    return [p for p in dpkg_installed(chroot.root) if p.name not in before]


@dataclass(frozen=True)
class AptDir:
    """apt's private state for one install: where it is on this host, where inside the copy, apt's options."""

    outer: Path
    inner: str
    opts: list[str]


@contextmanager
def _apt_dir(chroot: ImageChroot, dist: Distro, mirror: str) -> Iterator[AptDir]:
    """A private apt state (sources, lists, archives) under the copy's /tmp, removed afterwards."""
    tmp = chroot.root / "tmp"
    if tmp.is_symlink() or not tmp.is_dir():
        raise BuildError("the image's /tmp is not a directory", hint="the image is broken; generate it again")
    name = f"rain-apt-{uuid.uuid4().hex[:12]}"
    outer, inner = tmp / name, f"/tmp/{name}"
    outer.mkdir(mode=0o755)
    try:
        for sub in ("lists/partial", "archives/partial", "cache", "parts"):
            (outer / sub).mkdir(parents=True)
        signed = ""
        host_keyring = Path(KEYRINGS[dist.family])
        if host_keyring.is_file():  # the host's keyring for the family: the image may not carry one
            shutil.copyfile(host_keyring, outer / "keyring.gpg")
            signed = f"[signed-by={inner}/keyring.gpg] "
        (outer / "sources.list").write_text(
            f"deb {signed}{mirror} {dist.release} {apt_components(dist.family).replace(',', ' ')}\n")
        opts = ["-q", "-o", f"Dir::Etc::SourceList={inner}/sources.list", "-o", f"Dir::Etc::SourceParts={inner}/parts",
                "-o", f"Dir::State::Lists={inner}/lists", "-o", f"Dir::Cache={inner}/cache",
                "-o", f"Dir::Cache::Archives={inner}/archives", "-o", "APT::Sandbox::User=root"]
        yield AptDir(outer, inner, opts)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _apt(chroot: ImageChroot, apt: AptDir, args: list[str], dist: Distro, mirror: str, doing: str) -> Result:
    try:  # apt's own temporary files in the private directory too, so an interrupted run leaves none
        return chroot.run(["apt-get", *apt.opts, *args], what=doing, env={"TMPDIR": apt.inner})
    except BuildError as e:
        m = APT_MISSING.search(e.message)
        if m:
            raise InvalidInput(f"package {m.group(1) or m.group(2)!r} does not exist in {dist.family} "
                               f"{dist.release} ({dist.arch}) at {mirror}",
                               hint="add what the cloud needs to the recipe's packages instead") from None
        if APT_UNREACHABLE.search(e.message):
            raise Unreachable(f"mirror {mirror} is unreachable or has no {dist.release} ({doing})",
                              hint="check the `mirror` setting and the network") from None
        raise BuildError(f"{doing} in the image failed: {e.message}", hint=e.hint) from None


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def added_lines(added: list[Package], asked: Sequence[str]) -> list[str]:
    """The change lines for what install() added: each asked-for package with its version, then the rest."""
    lines = [f"installed {p.name} {p.version}" for p in added if p.name in asked]
    deps = [f"{p.name} {p.version}" for p in added if p.name not in asked]
    if deps:
        lines.append(f"installed {len(deps)} dependencies: " + ", ".join(deps))
    return lines
