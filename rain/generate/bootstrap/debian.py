"""Debian and Ubuntu: mmdebstrap (debootstrap as fallback), then apt-get in the chroot.

The base system (variant only, no recipe packages) is cached per
(family, release, arch, variant, mirror), and made on this host even for a
build on a builder VM, which gets the cached tree sent instead of
bootstrapping from nothing; the recipe's packages are added on top with
apt-get inside the image, from the shared .deb cache when possible.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from rain.errors import BuildError, RainError, RecipeError, Unreachable
from rain.generate.bootstrap.base import Package, place_base
from rain.generate.context import BuildContext
from rain.generate.lock import archives_from_policy
from rain.generate.recipe import OsFamily
from rain.host import command
from rain.image.licenses import debian_license
from rain.image.rootfs import RootFS
from rain.image.tarball import packaged_epoch

log = logging.getLogger(__name__)

_HOOK_IN = """#!/bin/sh
# rain: seed the new root's apt archive from the shared package cache; pin apt to a lock file's versions
set -e
if [ -n "$RAIN_LOCK_PREFS" ]; then
  mkdir -p "$1/etc/apt/preferences.d"
  cp "$RAIN_LOCK_PREFS" "$1/etc/apt/preferences.d/rain-lock.pref"
fi
mkdir -p "$1/var/cache/apt/archives/partial"
for f in "$RAIN_PKG_CACHE"/*.deb; do
  [ -e "$f" ] || continue
  ln "$f" "$1/var/cache/apt/archives/" 2>/dev/null || cp "$f" "$1/var/cache/apt/archives/"
done
"""
_HOOK_EXTRACT = """#!/bin/sh
# rain: dpkg under eatmydata while mmdebstrap installs (mmdebstrap's own hook), when the mirror has it
set -e
[ -n "$RAIN_EATMYDATA" ] || exit 0
APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-cache show eatmydata libeatmydata1 >/dev/null 2>&1 || exit 0
"$RAIN_EATMYDATA/extract.sh" "$1"
: > "$RAIN_EATMYDATA_ON"
"""
_HOOK_OUT = """#!/bin/sh
# rain: keep what was downloaded in the shared package cache; drop the build-only dpkg options
# (--dpkgopt writes them into the image, where they would stay)
set -e
if [ -e "$RAIN_EATMYDATA_ON" ]; then
  # eatmydata's hook removes its library and dpkg's diversion; then no trace of them is left in
  # the linker cache or in dpkg's backup of the diversions either
  "$RAIN_EATMYDATA/customize.sh" "$1"
  chroot "$1" ldconfig
  cp -p "$1/var/lib/dpkg/diversions" "$1/var/lib/dpkg/diversions-old"
fi
rm -f "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
for f in "$1"/var/cache/apt/archives/*.deb; do
  [ -e "$f" ] || continue
  b=$(basename "$f")
  [ -e "$RAIN_PKG_CACHE/$b" ] || ln "$f" "$RAIN_PKG_CACHE/$b" 2>/dev/null || cp "$f" "$RAIN_PKG_CACHE/$b"
done
"""
EATMYDATA_HOOKS = Path("/usr/share/mmdebstrap/hooks/eatmydata")
"""Shipped with mmdebstrap (1.1 and later); used when present and the mirror has eatmydata."""
STALE_LISTS = 6 * 3600
APT_MISSING = re.compile(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate")
APT_VERSION_GONE = re.compile(r"Version '([^']+)' for '([^']+)' was not found")
APT_UNREACHABLE = re.compile(r"Could not (resolve|connect)|Failed to fetch|Connection failed|Temporary failure "
                          r"resolving|Unable to connect|No such file or directory.*Release|"
                          r"does not have a Release file|404\s+Not Found", re.I)


def apt_components(family: OsFamily) -> str:
    return "main,universe" if family is OsFamily.UBUNTU else "main"


class DebianBootstrapper:
    def bootstrap(self, ctx: BuildContext) -> None:
        """The base system into the image root: on this host layered over the base cache; on a builder
        machine that same cached base is sent there (made here first when missing), so a VM does not
        bootstrap from nothing. Only a host without mmdebstrap and debootstrap has the machine run mmdebstrap."""
        if not ctx.builder.local and not (_host_tool("mmdebstrap") or _host_tool("debootstrap")):
            with ctx.reporter.step("base system"):
                self._bootstrap_remote(ctx)
            return
        r, cache = ctx.recipe, ctx.cache
        key = cache.base_key(r, ctx.mirror, ctx.loaded.lock.digest if ctx.loaded.lock is not None else None)
        ctx.facts["base_key"] = key
        with ctx.reporter.step("base system"):
            base, cached = cache.acquire_base(key, ctx.layers, lambda tmp: self._bootstrap_fresh(ctx, tmp),
                                              ctx.use_cache)
            ctx.facts["base_cached"] = cached
            ctx.base_tree = base
            place_base(ctx, base)
            if cached:
                age = time.time() - float(cache.base_meta(key).get("created", 0))
                ctx.facts["lists_stale"] = age > STALE_LISTS
                ctx.reporter.info(f"base system from cache ({key})")

    def _bootstrap_fresh(self, ctx: BuildContext, root: Path) -> dict[str, str]:
        """The variant's base system (no recipe packages) into root, for the base cache."""
        r, work = ctx.recipe, ctx.handle.spec.workdir
        pkg_cache = ctx.cache.packages_dir(r)
        log = ctx.handle.spec.log_file
        tool = _host_tool("mmdebstrap")
        if tool:
            hooks = []
            for name, text in (("hook-in", _HOOK_IN), ("hook-extract", _HOOK_EXTRACT), ("hook-out", _HOOK_OUT)):
                p = work / name
                p.write_text(text)
                p.chmod(0o755)
                hooks.append(p)
            # no fsync (as in the chroot): the tree is new, and is synced once below, before the cache
            # publishes it; plain mmdebstrap pays for dpkg's fsyncs, per file and per status change.
            # force-unsafe-io skips the first; dpkg under libeatmydata (mmdebstrap's eatmydata hook,
            # fetched from the mirror, gone again from the tree) the second: up to a third of the time here
            prefs = ""
            if ctx.loaded.lock is not None:  # apt pinned to the lock's versions before it picks the essential set
                prefs = str(work / "rain-lock.pref")
                Path(prefs).write_text(ctx.loaded.lock.apt_preferences())
            argv = [tool, "--mode=root", "--format=directory", f"--variant={r.variant}",
                    f"--architectures={r.os.arch}", f"--components={apt_components(r.os.family)}",
                    "--skip=cleanup/apt/lists", "--skip=download/empty", "--skip=essential/unlink",
                    "--dpkgopt=force-unsafe-io", f"--setup-hook={hooks[0]}", f"--extract-hook={hooks[1]}",
                    f"--customize-hook={hooks[2]}", r.os.release, str(root), ctx.mirror]
            env = {"RAIN_PKG_CACHE": str(pkg_cache), "TMPDIR": str(work), "RAIN_LOCK_PREFS": prefs,
                   "RAIN_EATMYDATA": str(EATMYDATA_HOOKS) if (EATMYDATA_HOOKS / "extract.sh").is_file() else "",
                   "RAIN_EATMYDATA_ON": str(work / "eatmydata-on")}
        else:
            tool = command.need("debootstrap")
            variant = ["--variant=minbase"] if r.variant == "minbase" else []
            argv = [tool, *variant, f"--arch={r.os.arch}", f"--components={apt_components(r.os.family)}",
                    f"--cache-dir={pkg_cache}", r.os.release, str(root), ctx.mirror]
            env = {}
        result = command.run(argv, env=env, check=False, what=argv[0], log_file=log)
        if result.returncode != 0:
            raise _apt_error(result.output, ctx, "bootstrapping the base system")
        _forget_build_host(root)
        if os.path.basename(tool) == "debootstrap":  # it keeps its .debs in the root; the package cache has them
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
        # apt's binary package cache, made inside the root so it stays valid there: every build on
        # this base then skips re-parsing the package lists (about a second each)
        command.run(["chroot", str(root), "apt-cache", "gencaches"], check=False, what="apt-cache gencaches")
        _sync(root)
        return {"family": r.os.family, "release": r.os.release, "arch": r.os.arch, "variant": r.variant,
                "mirror": ctx.mirror, "tool": os.path.basename(tool)}

    def _bootstrap_remote(self, ctx: BuildContext) -> None:
        """mmdebstrap on the builder machine, straight into the image root (no bootstrap tool on this host)."""
        r, h = ctx.recipe, ctx.handle
        ctx.facts["base_cached"] = False
        argv = ["mmdebstrap", "--mode=root", "--format=directory", f"--variant={r.variant}",
                f"--architectures={r.os.arch}", f"--components={apt_components(r.os.family)}",
                "--skip=cleanup/apt/lists", "--skip=essential/unlink", r.os.release, h.inner_root, ctx.mirror]
        result = ctx.builder.outside(h, argv, check=False, what="mmdebstrap")
        if result.returncode != 0:
            raise _apt_error(result.output, ctx, "bootstrapping the base system")
        # as _forget_build_host, on the machine: no resolver and no host name of the builder in the image
        ctx.builder.outside(h, ["rm", "-f", "--", f"{h.inner_root}/etc/resolv.conf"], what="rm resolv.conf")
        ctx.builder.outside(h, ["sh", "-c", 'printf "localhost\\n" > "$1"', "sh", f"{h.inner_root}/etc/hostname"],
                            what="hostname")

    def install(self, ctx: BuildContext, packages: list[str]) -> None:
        root = ctx.handle.root
        self._sources(ctx)
        pkg_cache = ctx.cache.packages_dir(ctx.recipe)
        archives = root / "var/cache/apt/archives"
        if ctx.builder.local:
            archives.mkdir(parents=True, exist_ok=True)
            ctx.cache.link_packages(pkg_cache, archives, ".deb")
            lists = root / "var/lib/apt/lists"
            have_lists = lists.is_dir() and any(p.name.endswith("Packages") for p in lists.iterdir())
        else:  # a base (cached or a fresh mmdebstrap) keeps its lists; a cloned image had them removed
            have_lists = "clone_of" not in ctx.facts
        if ctx.facts.get("lists_stale") or ctx.facts.get("extra_sources") or not have_lists:
            self._update(ctx)
        lock = ctx.loaded.lock
        if lock is not None:  # the base has them (mmdebstrap's setup hook); a clone's root has not
            ctx.builder.put(ctx.handle, lock.apt_preferences().encode(), LOCK_PREFERENCES)
            packages = [f"{p}={lock.version_of(p)}" if lock.version_of(p) else p for p in packages]
        if packages:
            argv = ["apt-get", "-y", "-q", "--no-install-recommends", "-o", "APT::Keep-Downloaded-Packages=true",
                    "install", "--", *packages]
            _install_with_retry(ctx, argv)
        if ctx.builder.local:
            ctx.cache.link_packages(archives, pkg_cache, ".deb")

    def _update(self, ctx: BuildContext) -> None:
        try:
            ctx.builder.run(ctx.handle, ["apt-get", "-q", "update"], what="apt-get update")
        except BuildError as e:
            raise _apt_error(e.message, ctx, "apt-get update") from None

    def _sources(self, ctx: BuildContext) -> None:
        r = ctx.recipe
        for repo in r.repositories:
            opts = []
            if repo.trusted:
                opts.append("trusted=yes")
            if repo.gpgkey and "://" in repo.gpgkey:
                raise RecipeError(f"repositories: {repo.name}: gpgkey must be a file next to the recipe",
                                  hint="download the key once and give its path")
            if repo.gpgkey:
                key = f"/etc/apt/keyrings/rain-{repo.name}.asc"
                ctx.builder.put(ctx.handle, ctx.loaded.inputs[repo.gpgkey], key)
                opts.append(f"signed-by={key}")
            line = " ".join(["deb", f"[{' '.join(opts)}]" if opts else "", repo.url,
                             repo.suite or r.os.release, *repo.components]).replace("  ", " ")
            ctx.builder.put(ctx.handle, (line + "\n").encode(), f"/etc/apt/sources.list.d/rain-{repo.name}.list")
            ctx.facts["extra_sources"] = True

    def installed(self, ctx: BuildContext) -> list[Package]:
        return dpkg_installed(ctx.handle.root, licenses=True)

    def source_epoch(self, root: Path) -> int | None:
        return packaged_epoch(root)

    def tidy(self, root: Path, epoch: int | None) -> None:
        """Nothing left to do here: finish emptied dpkg's and apt's logs where the build ran."""

    def finish(self, ctx: BuildContext) -> None:
        b, h = ctx.builder, ctx.handle
        # the archive (suite/component) each installed version came from, for a lock file: said where
        # apt can say it, never a reason to fail a build
        try:
            b.run(h, ["sh", "-c", _POLICY], env={"LC_ALL": "C"}, what="reading where each package came from")
            ctx.facts["archives"] = archives_from_policy(b.get(h, _POLICY_OUT).decode("utf-8", "replace"))
        except BuildError as e:
            log.warning("the packages' archives are not known (%s)", e.message)
        b.run(h, ["rm", "-f", _POLICY_OUT, LOCK_PREFERENCES], what="removing the build's apt notes")
        b.run(h, ["apt-get", "clean"], what="apt-get clean")
        # what says when the build ran, not what is in the image: dpkg's and apt's logs (kept, emptied) and
        # ldconfig's aux-cache (files' inodes and times; ldconfig makes it again): with them gone, two builds of
        # one recipe from one state of the mirror give the same tar.zst (docs/reproducible.md)
        b.run(h, ["sh", "-c", _FORGET_WHEN], what="emptying the build's logs")
        b.run(h, ["find", "/var/lib/apt/lists", "-maxdepth", "1", "-type", "f", "!", "-name", "lock", "-delete"],
              what="dropping the package lists")
        b.run(h, ["rm", "-rf", "/var/cache/apt/archives/partial"], what="apt cache")


_FORGET_WHEN = ("for f in /var/log/dpkg.log /var/log/apt/history.log /var/log/apt/term.log "
                "/var/log/alternatives.log; do if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then : > \"$f\"; fi; done; "
                "rm -f /var/cache/ldconfig/aux-cache")
_POLICY_OUT = "/tmp/rain-apt-policy"
_POLICY = "dpkg-query -W -f='${Package}\\n' | xargs -r apt-cache policy > " + _POLICY_OUT
LOCK_PREFERENCES = "/etc/apt/preferences.d/rain-lock.pref"
"""apt's pins to a lock file's versions while the image is built (rain.generate.lock); never left in it."""


def _host_tool(name: str) -> str | None:
    try:
        return command.need(name)
    except RainError:
        return None


def dpkg_installed(root: Path, licenses: bool = False) -> list[Package]:
    """The packages dpkg has installed in the tree at root (read from the host, nothing runs inside); with
    `licenses`, each with the license its machine-readable copyright file states (for the SBOM)."""
    admindir = root / "var/lib/dpkg"
    out = command.run(["dpkg-query", f"--admindir={admindir}", "-W",
                       "-f=${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\n"],
                      what="dpkg-query", keep=100000).output
    pkgs = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "installed":
            pkgs.append(Package(parts[1], parts[2], parts[3]))
    if licenses:
        tree = RootFS(root)
        pkgs = [Package(p.name, p.version, p.arch, debian_license(tree, p.name)) for p in pkgs]
    return sorted(pkgs, key=lambda p: p.name)


def _sync(root: Path) -> None:
    """Write the new base to disk before the cache publishes it (dpkg ran without fsync): a crash must not
    leave a cached base with empty files. By then the kernel has written most of it back: ~0.1 s."""
    command.run(["sync", "--file-system", str(root)], what="sync")


def _forget_build_host(root: Path) -> None:
    """mmdebstrap leaves the build host's resolv.conf and hostname in the root; an image gets neither."""
    etc = root / "etc"
    if etc.is_symlink() or not etc.is_dir():
        return
    resolv, hostname = etc / "resolv.conf", etc / "hostname"
    if resolv.is_file() and not resolv.is_symlink():
        resolv.unlink()
    if not hostname.is_symlink():
        hostname.write_text("localhost\n")
        hostname.chmod(0o644)


def _install_with_retry(ctx: BuildContext, argv: list[str]) -> None:
    """Install; if the lists were stale or a package is missing, update once and retry."""
    try:
        ctx.builder.run(ctx.handle, argv, what="apt-get install")
        return
    except BuildError as first:
        if not (APT_MISSING.search(first.message) or APT_VERSION_GONE.search(first.message)
                or APT_UNREACHABLE.search(first.message)):
            raise _apt_error(first.message, ctx, "installing packages") from None
    DebianBootstrapper()._update(ctx)
    try:
        ctx.builder.run(ctx.handle, argv, what="apt-get install")
    except BuildError as e:
        raise _apt_error(e.message, ctx, "installing packages") from None


def _apt_error(output: str, ctx: BuildContext, doing: str) -> Exception:
    r = ctx.recipe
    gone = APT_VERSION_GONE.search(output)
    if gone and ctx.loaded.lock is not None:  # asked for as NAME=VERSION: the lock's version
        return ctx.loaded.lock.gone(gone.group(2), gone.group(1))
    m = APT_MISSING.search(output)
    if m:
        name = m.group(1) or m.group(2)
        return RecipeError(f"packages: {name!r} does not exist in {r.os.family} {r.os.release} "
                           f"({r.os.arch}) at {ctx.mirror}",
                           hint="check the spelling, the release, and the recipe's repositories")
    if APT_UNREACHABLE.search(output):
        return Unreachable(f"mirror: {ctx.mirror} is unreachable or has no {r.os.release} ({doing})",
                           hint="check the recipe's `mirror:` (or the `mirror` setting) and the network")
    last = [ln for ln in output.splitlines() if ln.strip()][-3:]
    return BuildError(f"{doing} failed: " + " | ".join(last), hint="see the build log (--debug keeps it)")
