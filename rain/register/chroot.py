"""Running the image's own programs on register's unpacked copy, and installing packages into it.

Installing a package or rebuilding an initramfs runs code from the image
(maintainer scripts, hooks, apt and dpkg themselves) as root. The image may
be anyone's upload, so by default that code runs in a throwaway builder VM
(the `adapt_builder` setting, `qemu` unless an operator chooses otherwise):
the copy goes into the VM (for a VM on this host as a read-only squashfs under
an overlay, so only what the commands change comes back), the commands run in
a chroot there, and the result comes back through the same safe unpacker as
any built image, then is vetted again. `local` runs the commands in a chroot
on this host instead (the chroot set-up is generate's own: /proc, /sys, a
private /dev, policy-rc.d, the host's resolver lent, all undone when the block
ends); only a site that registers nothing but its own images should choose it.

Packages come from the image's own distribution through generate's mirror
(the `mirror` setting, else the host's apt sources); apt's lists and
downloads live in a private directory inside the copy that is removed
afterwards, so the image's own apt configuration, lists and caches are left
as they were. The local chroot also shares generate's package cache both
ways; a VM only downloads, so nothing the image's code touched reaches the
cache other builds use.
"""

from __future__ import annotations

import contextlib
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
from rain.generate.builders.base import Builder, BuildSpec, Handle, builder_name, get_builder
from rain.generate.builders.local import LocalBuilder
from rain.generate.cache import Cache
from rain.generate.layers import remove_tree
from rain.generate.mirror import host_apt_mirror
from rain.generate.recipe import BuilderName, OsFamily
from rain.host.command import Result
from rain.image.formats import make_lower
from rain.image.rootfs import RootFS
from rain.repository.base import Repository

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

    def __init__(self, builder: Builder, handle: Handle) -> None:
        self.builder, self.handle = builder, handle

    def run(self, argv: Sequence[str], what: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self.builder.run(self.handle, argv, env=env, what=what)


class Sandbox:
    """Where the image's own programs run during adapt: `local` (a chroot on this host) or a builder VM."""

    def __init__(self, settings: Settings, repo: Repository | None = None, log_file: Path | None = None) -> None:
        self.settings, self.repo, self.log_file = settings, repo, log_file
        self.name = builder_name(settings.adapt_builder)

    @property
    def local(self) -> bool:
        return self.name == BuilderName.LOCAL

    @contextmanager
    def session(self, root: Path) -> Iterator[ImageChroot]:
        """Commands in the copy at `root`; a VM gets the copy when the block starts and gives the changes back
        when it ends without error. A VM on this host mounts the copy read-only (a squashfs on its base disk)
        under an overlay and returns only the overlay's upper layer, which the safe unpacker lays over `root`;
        a cloud VM gets the whole tree and returns the whole tree, which replaces `root`'s contents. Mounts,
        files and the VM are gone after."""
        if self.local:
            with session(root, self.log_file) as ch:
                yield ch
            return
        builder = get_builder(self.name.value, self.settings, self.repo)
        with tempfile.TemporaryDirectory(prefix=".rain-adapt-", dir=root.parent) as work:
            spec = BuildSpec(name="register-adapt", workdir=Path(work), debian=True, log_file=self.log_file)
            handle = builder.start(spec)
            try:
                handle.root = root
                layer = Path(work) / "image.squashfs"
                attached = builder.attach_base(handle, lambda: make_lower(root, layer))
                layer.unlink(missing_ok=True)  # its bytes are on the VM's disk now: not a third copy meanwhile
                if not attached:
                    builder.push(handle)
                self._log("the copy is on the builder read-only, under an overlay: only the changes come back"
                          if attached else "the copy was sent to the builder whole: the whole tree comes back")
                yield ImageChroot(builder, handle)
                if attached:  # the changes alone, laid over the copy here by the safe unpacker's layer mode
                    builder.fetch(handle)
                else:
                    fetched = Path(work) / "fetched"
                    fetched.mkdir()
                    handle.root = fetched
                    builder.fetch(handle)  # the safe unpacker: nothing in the result escapes `fetched`
                    _replace_contents(root, fetched)
            finally:
                builder.stop(handle)

    def _log(self, line: str) -> None:
        """A line of Rain's own in the adapt log, among what the image's programs printed."""
        if self.log_file is not None:
            with open(self.log_file, "a") as log:
                log.write(f"rain: {line}\n")


def _replace_contents(root: Path, new: Path) -> None:
    """Make `root` hold what `new` holds (root may be a mount point, so its entries move, not root)."""
    for child in list(root.iterdir()):
        remove_tree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for child in list(new.iterdir()):
        os.rename(child, root / child.name)
    st = new.lstat()
    os.chown(root, st.st_uid, st.st_gid)
    os.chmod(root, st.st_mode & 0o7777)


@contextmanager
def session(root: Path, log_file: Path | None = None) -> Iterator[ImageChroot]:
    """A chroot into `root` on this host; mounts and policy files are gone when the block ends, however it ends."""
    with tempfile.TemporaryDirectory(prefix="rain-chroot-") as work:
        spec = BuildSpec(name="register", workdir=Path(work), debian=True, log_file=log_file)
        builder = LocalBuilder()
        builder.start(spec)  # checks for root and the tools
        handle = Handle(spec=spec, root=root, inner_root=str(root), workspace=work)
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


def run_in_image(sandbox: Sandbox, root: Path, packages: Sequence[str],
                 commands: Sequence[tuple[Sequence[str], str]] = ()) -> list[Package]:
    """apt-get install `packages` (no recommends), then run each (argv, what) of `commands`, in the copy at
    `root` inside the sandbox; returns every package that was added."""
    before = {p.name for p in dpkg_installed(root)} if packages else set()
    with contextlib.ExitStack() as stack:
        apt = None
        if packages:
            dist = distro(root)
            mirror = (sandbox.settings.mirror or host_apt_mirror(dist.family) or "").rstrip("/")
            if not mirror:
                raise InvalidInput(f"no {dist.family} mirror to install {', '.join(packages)} from",
                                   hint="set the `mirror` setting (fg-image config) or add a deb source to this "
                                        "host's apt")
            apt = stack.enter_context(_apt_dir(root, dist, mirror))  # written before a VM gets the copy
            cache = Cache.for_data(sandbox.settings.data_path).packages_dir_for(dist.family, dist.release, dist.arch)
        with sandbox.session(root) as ch:
            if apt is not None:
                install(ch, apt, packages, cache if sandbox.local else None)
                if not sandbox.local:  # apt's lists and downloads need not travel back from the VM
                    ch.run(["rm", "-rf", "--", apt.inner], what="removing apt's private state")
            for argv, what in commands:
                ch.run(argv, what=what)
        if apt is not None and sandbox.local:  # what this host's chroot downloaded, for the next build
            Cache.link_packages(apt.outer / "archives", cache, ".deb")
    return [p for p in dpkg_installed(root) if p.name not in before] if packages else []


def install(ch: ImageChroot, apt: AptDir, packages: Sequence[str], cache: Path | None) -> None:
    """apt-get install `packages` in the chroot with the private apt state `apt`; packages already in `cache`
    (a local chroot only) are lent to apt instead of downloaded."""
    _apt(ch, apt, ["update"], "apt-get update")
    wanted = ["install", "-y", "--no-install-recommends", "--", *packages]
    if cache is not None:
        uris = _apt(ch, apt, ["--print-uris", *wanted], "resolving packages")
        archives = apt.outer / "archives"
        for line in uris.output.splitlines():
            m = _URI.match(line)
            if m and (cache / m["file"]).is_file() and not (cache / m["file"]).is_symlink():
                _link(cache / m["file"], archives / m["file"])
    _apt(ch, apt, ["-o", "APT::Keep-Downloaded-Packages=true", *wanted], "installing " + ", ".join(packages))


@dataclass(frozen=True)
class AptDir:
    """apt's private state for one install: where it is on this host, where inside the copy, apt's options,
    and what it installs from (for the errors)."""

    outer: Path
    inner: str
    opts: list[str]
    dist: Distro
    mirror: str


@contextmanager
def _apt_dir(root: Path, dist: Distro, mirror: str) -> Iterator[AptDir]:
    """A private apt state (sources, lists, archives) under the copy's /tmp, removed afterwards."""
    tmp = root / "tmp"
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
                "-o", f"Dir::Cache::Archives={inner}/archives", "-o", "APT::Sandbox::User=root",
                # no translated descriptions: a third of the download, which an emulated VM also unpacks
                # (dpkg's fsyncs are off already: the chroot set-up's force-unsafe-io)
                "-o", "Acquire::Languages=none"]
        yield AptDir(outer, inner, opts, dist, mirror)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _apt(chroot: ImageChroot, apt: AptDir, args: list[str], doing: str) -> Result:
    dist, mirror = apt.dist, apt.mirror
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
