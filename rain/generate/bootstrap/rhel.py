"""Rocky, Alma, CentOS Stream, Fedora: `dnf --installroot` (yum where dnf is absent).

Repositories come only from the recipe (`mirror:` as a baseurl, plus
`repositories:`) through a private dnf.conf with an empty reposdir, so the
host's own repositories never leak into an image. The rpm database goes to
/var/lib/rpm whatever the host's rpm macros say.

dnf runs where the build runs. On this host (the local builder) downloaded
packages are kept in the shared package cache (dnf's cachedir). On a builder
machine, dnf runs there, so a repository's scriptlets never run on this host:
its configuration is sent to the build's workspace on the machine, a
`file://` repository's directory goes with it (the machine cannot read this
host's files), and the machine downloads into its own cache. A base variant
(`@core`) is made once here and cached, then sent, as for Debian.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

from rain.errors import BuildError, RecipeError, Unreachable
from rain.generate.bootstrap import dnf_state
from rain.generate.bootstrap.base import Package, place_base
from rain.generate.context import BuildContext
from rain.generate.recipe import Variant
from rain.host import command
from rain.host.command import Result

log = logging.getLogger(__name__)

_MISSING = re.compile(r"No match for argument:\s*(\S+)|No package (\S+) available")
_UNREACHABLE = re.compile(r"Failed to download metadata|Cannot download repomd|Curl error|"
                          r"Cannot find a valid baseurl|Errors during downloading metadata", re.I)
_BASE_SETS = {Variant.MINBASE: [], Variant.IMPORTANT: ["@core"], Variant.STANDARD: ["@core", "@standard"]}
_RM_PLAIN_DIRS = 'for d; do if [ -d "$d" ] && [ ! -L "$d" ]; then rm -rf --one-file-system -- "$d"; fi; done'
"""Remove each argument that is a real directory (not a link to one); paths arrive as arguments."""
_RMDIR_UP = ('d=$1; while [ "$d" != "$2" ] && [ -d "$d" ] && [ ! -L "$d" ] && rmdir -- "$d" 2>/dev/null; '
             'do d=${d%/*}; done')
"""Remove the directory $1 and each one above it, up to $2, while they are empty real directories."""


class RhelBootstrapper:
    def bootstrap(self, ctx: BuildContext) -> None:
        r = ctx.recipe
        base = _BASE_SETS[r.variant]
        ctx.facts["base_cached"] = False
        if not base:
            return  # minbase: the recipe's packages (and their dependencies) are the system
        if not ctx.builder.local and not _which("dnf"):
            with ctx.reporter.step("base system"):
                self._dnf(ctx, base)  # no dnf on this host: the machine makes the base (not cached)
            return
        lock = ctx.loaded.lock
        key = ctx.cache.base_key(r, ctx.mirror, lock.digest if lock is not None else None)
        ctx.facts["base_key"] = key

        def fresh(tmp: Path) -> dict[str, str]:
            self._dnf(ctx, _locked(ctx, base), root=tmp)
            return {"family": r.os.family, "release": r.os.release, "arch": r.os.arch, "variant": r.variant,
                    "mirror": ctx.mirror}

        with ctx.reporter.step("base system"):
            path, cached = ctx.cache.acquire_base(key, ctx.layers, fresh, ctx.use_cache)
            ctx.facts["base_cached"] = cached
            place_base(ctx, path)
            ctx.base_tree = path  # read through a copy of its rpm database (source_epoch), never written

    def install(self, ctx: BuildContext, packages: list[str]) -> None:
        packages = _locked(ctx, packages)
        if not packages:
            return
        if ctx.recipe.base is not None and ctx.builder.exists(ctx.handle, "/usr/bin/dnf"):
            try:
                ctx.builder.run(ctx.handle, ["dnf", "-y", "-q", "--setopt=install_weak_deps=False",
                                             "install", "--", *packages], what="dnf install")
            except BuildError as e:
                raise _dnf_error(e.message, ctx) from None
            return
        self._dnf(ctx, packages)

    def _dnf(self, ctx: BuildContext, packages: list[str], root: Path | None = None) -> None:
        """dnf --installroot: into `root` on this host (a base for the cache), else into the image root
        where the build runs (this host for the local builder, the machine for a VM builder)."""
        here = root is not None or ctx.builder.local
        r, h = ctx.recipe, ctx.handle
        run: Callable[..., Result]  # where dnf runs: its resolver (below) and its install
        if here:
            tool = _which("dnf") or command.need("yum")
            conf = self._config(ctx, h.spec.workdir / "dnf")
            cachedir = str(ctx.cache.packages_dir(r))
            run, python = partial(command.run, log_file=h.spec.log_file), shutil.which("python3", path="/usr/bin:/bin")
        else:
            tool = "dnf"  # the builder image has it
            conf = self._send_config(ctx)
            cachedir = f"{h.workspace}/dnf-cache"
            run, python = partial(ctx.builder.outside, h), "python3"
        into = str(root) if root is not None else h.inner_root
        argv = [tool, "-y", f"--installroot={into}", f"--releasever={r.os.release}", f"--config={conf}/dnf.conf",
                f"--setopt=reposdir={conf}/repos.d", f"--setopt=cachedir={cachedir}",
                "--setopt=keepcache=True", "--setopt=install_weak_deps=False", "--setopt=tsflags=nodocs"]
        if r.os.arch != os.uname().machine:
            argv.append(f"--forcearch={r.os.arch}")
        argv += ["install", "--", *packages]
        env = {"HOME": f"{conf}/home", **h.env}  # rpm's macros (its database's place); SOURCE_DATE_EPOCH
        if ctx.reproducible and "SOURCE_DATE_EPOCH" not in env and python is not None:
            epoch = _newest_build(run, [python, "-c", _RESOLVE, json.dumps(argv)], env)  # rpm's install time
            if epoch is not None:
                env["SOURCE_DATE_EPOCH"] = str(epoch)
                if root is None:  # the image's own epoch from here on (a base for the cache has its own)
                    h.env["SOURCE_DATE_EPOCH"] = str(epoch)
        result = run(argv, env=env, check=False, what=tool)
        if here:
            _drop_host_path(Path(into), Path(cachedir))
        else:
            # dnf also makes its cachedir's path inside the installroot: the workspace's own name is unique;
            # then the directories above it that dnf made, empty now (as _drop_host_path does here)
            ctx.builder.outside(h, ["sh", "-c", _RM_PLAIN_DIRS, "sh", f"{into}{h.workspace}"], what="rm")
            ctx.builder.outside(h, ["sh", "-c", _RMDIR_UP, "sh", f"{into}{os.path.dirname(h.workspace)}", into],
                                what="rmdir")
        if result.returncode != 0:
            raise _dnf_error(result.output, ctx)

    def _send_config(self, ctx: BuildContext) -> str:
        """dnf's configuration for the machine, written here and sent to the build's workspace there,
        with each file:// repository's directory (the machine cannot read this host's files)."""
        h = ctx.handle
        where = f"{h.workspace}/dnf"
        local_dirs: dict[str, Path] = {}
        self._config(ctx, h.spec.workdir / "dnf", where, local_dirs)
        ctx.builder.push(h, h.spec.workdir / "dnf", dest=where)
        for name, directory in local_dirs.items():
            ctx.builder.push(h, directory, dest=f"{where}/{name}")
        return where

    def _config(self, ctx: BuildContext, conf_dir: Path, where: str | None = None,
                local_dirs: dict[str, Path] | None = None) -> str:
        """Write dnf.conf, an empty repos.d, keys and the rpm macros under conf_dir on this host; paths in
        them name `where` (the same directory as the builder sees it). With local_dirs, each file://
        repository is listed as where/<name> and its directory on this host put in local_dirs."""
        r = ctx.recipe
        where = where or str(conf_dir)
        for sub in ("repos.d", "home"):
            (conf_dir / sub).mkdir(parents=True, exist_ok=True)
        (conf_dir / "home" / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")

        def url(name: str, baseurl: str) -> str:
            parsed = urlparse(baseurl)
            if local_dirs is None or parsed.scheme != "file":
                return baseurl
            directory = Path(unquote(parsed.path))
            if not directory.is_dir():
                raise RecipeError(f"repositories: {baseurl} is not a directory on this host",
                                  hint="give the path of a repository made with createrepo_c")
            local_dirs[f"repo-{name}"] = directory
            return f"file://{where}/repo-{name}"

        sections = ["[main]", "gpgcheck=1", "install_weak_deps=False", "keepcache=True", f"reposdir={where}/repos.d",
                    "skip_if_unavailable=False", ""]
        if ctx.mirror:
            sections += ["[rain-mirror]", "name=rain-mirror", f"baseurl={url('mirror', ctx.mirror)}", "gpgcheck=0", ""]
            ctx.reporter.info("packages from the mirror are not signature-checked; "
                              "list it under repositories: with a gpgkey to check them")
        for repo in r.repositories:
            sections += [f"[rain-{repo.name}]", f"name={repo.name}", f"baseurl={url(repo.name, repo.url)}"]
            if repo.gpgkey and "://" in repo.gpgkey:
                sections += ["gpgcheck=1", f"gpgkey={repo.gpgkey}"]
            elif repo.gpgkey:
                key = f"key-{repo.name}.asc"
                (conf_dir / key).write_bytes(ctx.loaded.inputs[repo.gpgkey])
                sections += ["gpgcheck=1", f"gpgkey=file://{where}/{key}"]
            elif repo.trusted:
                sections += ["gpgcheck=0"]
            else:
                raise RecipeError(f"repositories: {repo.name!r} has no gpgkey",
                                  hint="add `gpgkey: <file>` or, for a local repository, `trusted: true`")
            sections.append("")
        (conf_dir / "dnf.conf").write_text("\n".join(sections))
        return where

    def installed(self, ctx: BuildContext) -> list[Package]:
        root = ctx.handle.root
        out = self._query(root, "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\t%{LICENSE}\n")
        pkgs = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 4:  # the License tag, as the package states it (rain.image.licenses)
                license = parts[3].strip()[:200]
                pkgs.append(Package(parts[0], parts[1].removeprefix("0:"), parts[2],
                                    None if license in ("", "(none)") else license))
        ctx.facts["archives"] = dnf_state.repos(root, pkgs)  # the manifest's and a lock's `archive` for each
        return sorted(pkgs, key=lambda p: p.name)

    def source_epoch(self, root: Path) -> int | None:
        """The newest build time among the installed packages (rpm's BUILDTIME): the same versions, the same
        epoch."""
        times = [int(t) for t in self._query(root, "%{BUILDTIME}\n").split() if t.isdigit()]
        return max(times) if times else None

    @staticmethod
    def _query(root: Path, fmt: str) -> str:
        """`rpm -qa --qf fmt` of the tree at root ("" where it has no rpm database). rpm writes beside its
        database even to query it, so it queries a copy: the tree (an image, a cached base) is only read."""
        with dnf_state.rpmdb_copy(root) as dbpath:
            if dbpath is None:
                return ""
            return command.run(["rpm", f"--dbpath={dbpath}", "-qa", "--qf", fmt], what="rpm -qa", keep=100000).output

    def tidy(self, root: Path, epoch: int | None) -> None:
        dnf_state.tidy(root, epoch)

    def finish(self, ctx: BuildContext) -> None:
        inner = ctx.handle.inner_root
        ctx.builder.outside(ctx.handle, ["sh", "-c", _RM_PLAIN_DIRS, "sh", f"{inner}/var/cache/dnf",
                                         f"{inner}/var/cache/yum"], what="cleaning the dnf cache")


_RESOLVE = r"""
import json, sys
import dnf
argv = json.loads(sys.argv[1])
base = dnf.Base()
conf = base.conf
words = argv[argv.index("install") + 1:]
for arg in argv[1:argv.index("install")]:
    name, _, value = arg.lstrip("-").partition("=")
    if name == "config":
        conf.config_file_path = value  # its repository sections are read from it too
        conf.read()
for arg in argv[1:argv.index("install")]:
    name, _, value = arg.lstrip("-").partition("=")
    if name == "installroot":
        conf.installroot = value
    elif name == "releasever":
        conf.releasever = value
    elif name == "forcearch":
        conf.arch = value
        conf.ignorearch = True
    elif name == "setopt":
        key, _, setting = value.partition("=")
        if key == "reposdir":
            conf.reposdir = [setting]
        elif key == "cachedir":
            conf.cachedir = setting
        elif key == "install_weak_deps":
            conf.install_weak_deps = setting == "True"
conf.prepend_installroot("cachedir")  # where the install itself keeps the metadata: fetched once
base.read_all_repos()
base.fill_sack(load_system_repo=True)
base.install_specs([w for w in words if w != "--"])
base.resolve()
print(max((p.buildtime for p in base.transaction.install_set), default=0))
"""
"""dnf's own resolution (its Python API, run by the host's Python as dnf is) of what an install will add, and
the newest build time among those packages."""


def _newest_build(run: Callable[..., Result], resolve: list[str], env: dict[str, str]) -> int | None:
    """The newest build time among the packages a dnf install would add, known before it runs (`resolve`:
    _RESOLVE with the install's argv, run by `run` where the install runs, this host or the machine): given
    to rpm as SOURCE_DATE_EPOCH it is each package's recorded install time, so two builds of the same
    versions record the same. Its metadata goes where the install's own goes (the cachedir inside the
    installroot, taken out after it). None where dnf's Python API cannot tell (the install then decides,
    and its own error, if any, is the one shown)."""
    result = run(resolve, env=env, check=False, what="dnf resolve")
    newest = result.output.strip().splitlines()[-1:] if result.returncode == 0 else []
    if not newest or not newest[0].isdigit() or int(newest[0]) <= 0:
        log.info("dnf could not say what the install adds (%s): install times are the build's",
                 result.output.strip()[-200:])
        return None
    return int(newest[0])


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=command.SAFE_PATH)


def _drop_host_path(root: Path, host_dir: Path) -> None:
    """dnf also creates the (host) cachedir path inside the installroot; take it out again."""
    inside = root / str(host_dir).lstrip("/")
    parts = inside.relative_to(root).parts
    if any((root.joinpath(*parts[:i + 1])).is_symlink() for i in range(len(parts))):
        return
    if inside.is_dir():
        shutil.rmtree(inside, ignore_errors=True)
    try:
        os.removedirs(inside.parent)
    except OSError:
        pass


def _locked(ctx: BuildContext, packages: list[str]) -> list[str]:
    """With a lock, every locked package as NAME-[EPOCH:]VERSION-RELEASE.ARCH (the whole system: the base
    variant's set, then the recipe's, which finds them installed); without one, `packages` as they are."""
    lock = ctx.loaded.lock
    if lock is None or (not packages and ctx.recipe.base is None and _BASE_SETS[ctx.recipe.variant]):
        return packages
    if ctx.recipe.base is not None:  # a clone: the base image's packages are what they are; pin the added ones
        return [f"{p}-{lock.version_of(p)}" if lock.version_of(p) else p for p in packages]
    return [f"{p.name}-{p.version}.{p.arch}" for p in lock.packages]


def _dnf_error(output: str, ctx: BuildContext) -> Exception:
    r = ctx.recipe
    m = _MISSING.search(output)
    lock = ctx.loaded.lock
    if m and lock is not None:  # a locked NEVRA the repositories no longer offer
        asked = m.group(1) or m.group(2)
        for p in lock.packages:
            if asked in (f"{p.name}-{p.version}.{p.arch}", f"{p.name}-{p.version}"):
                return lock.gone(p.name, p.version)
    if m:
        name = m.group(1) or m.group(2)
        return RecipeError(f"packages: {name!r} does not exist in the repositories of {r.os.family} {r.os.release}",
                           hint="check the spelling and the recipe's `repositories:`")
    if _UNREACHABLE.search(output):
        return Unreachable(f"repositories of {r.name} are unreachable: "
                           + ", ".join([ctx.mirror] * bool(ctx.mirror) + [x.url for x in r.repositories]),
                           hint="check `mirror:` / `repositories:` URLs and the network")
    last = [ln for ln in output.splitlines() if ln.strip()][-3:]
    return BuildError("dnf failed: " + " | ".join(last), hint="see the build log (--debug keeps it)")
