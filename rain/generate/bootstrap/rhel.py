"""Rocky, Alma, CentOS Stream, Fedora: `dnf --installroot` (yum where dnf is absent).

Repositories come only from the recipe (`mirror:` as a baseurl, plus
`repositories:`) through a private dnf.conf with an empty reposdir, so the
host's own repositories never leak into an image. The rpm database goes to
/var/lib/rpm whatever the host's rpm macros say. Downloaded packages are kept
in the shared package cache (dnf's cachedir).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from rain.errors import BuildError, RecipeError, Unreachable
from rain.generate.bootstrap.base import Package
from rain.generate.context import BuildContext
from rain.generate.layers import stack_on
from rain.generate.recipe import Variant
from rain.host import command

_MISSING = re.compile(r"No match for argument:\s*(\S+)|No package (\S+) available")
_UNREACHABLE = re.compile(r"Failed to download metadata|Cannot download repomd|Curl error|"
                          r"Cannot find a valid baseurl|Errors during downloading metadata", re.I)
_BASE_SETS = {Variant.MINBASE: [], Variant.IMPORTANT: ["@core"], Variant.STANDARD: ["@core", "@standard"]}


class RhelBootstrapper:
    def bootstrap(self, ctx: BuildContext) -> None:
        r = ctx.recipe
        base = _BASE_SETS[r.variant]
        ctx.facts["base_cached"] = False
        if not base:
            return  # minbase: the recipe's packages (and their dependencies) are the system
        key = ctx.cache.base_key(r, ctx.mirror)
        ctx.facts["base_key"] = key

        def fresh(tmp: Path) -> dict[str, str]:
            self._dnf(ctx, base, root=tmp)
            return {"family": r.os.family, "release": r.os.release, "arch": r.os.arch, "variant": r.variant,
                    "mirror": ctx.mirror}

        with ctx.reporter.step("base system"):
            path, cached = ctx.cache.acquire_base(key, ctx.layers, fresh, ctx.use_cache)
            ctx.facts["base_cached"] = cached
            ctx.facts["base_layer"] = stack_on(path, ctx.handle.root, ctx.handle.spec.workdir, ctx.layers)

    def install(self, ctx: BuildContext, packages: list[str]) -> None:
        if not packages:
            return
        inside = ctx.handle.root / "usr/bin/dnf"
        if ctx.recipe.base is not None and (inside.exists() or inside.is_symlink()):
            try:
                ctx.builder.run(ctx.handle, ["dnf", "-y", "-q", "--setopt=install_weak_deps=False",
                                             "install", "--", *packages], what="dnf install")
            except BuildError as e:
                raise _dnf_error(e.message, ctx) from None
            return
        self._dnf(ctx, packages)

    def _dnf(self, ctx: BuildContext, packages: list[str], root: Path | None = None) -> None:
        work, r = ctx.handle.spec.workdir, ctx.recipe
        root = root or ctx.handle.root
        tool = _which("dnf") or command.need("yum")
        conf, reposdir = self._config(ctx)
        home = work / "home"
        home.mkdir(exist_ok=True)
        (home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        argv = [tool, "-y", f"--installroot={root}", f"--releasever={r.os.release}", f"--config={conf}",
                f"--setopt=reposdir={reposdir}", f"--setopt=cachedir={ctx.cache.packages_dir(r)}",
                "--setopt=keepcache=True", "--setopt=install_weak_deps=False", "--setopt=tsflags=nodocs"]
        if r.os.arch != os.uname().machine:
            argv.append(f"--forcearch={r.os.arch}")
        result = command.run([*argv, "install", "--", *packages], env={"HOME": str(home)}, check=False,
                             what=tool, log_file=ctx.handle.spec.log_file)
        _drop_host_path(root, ctx.cache.packages_dir(r))
        if result.returncode != 0:
            raise _dnf_error(result.output, ctx)

    def _config(self, ctx: BuildContext) -> tuple[Path, Path]:
        work, r = ctx.handle.spec.workdir, ctx.recipe
        reposdir = work / "repos.d"
        reposdir.mkdir(exist_ok=True)
        sections = ["[main]", "gpgcheck=1", "install_weak_deps=False", "keepcache=True", f"reposdir={reposdir}",
                    "skip_if_unavailable=False", ""]
        if ctx.mirror:
            sections += ["[rain-mirror]", "name=rain-mirror", f"baseurl={ctx.mirror}", "gpgcheck=0", ""]
            ctx.reporter.info("packages from the mirror are not signature-checked; "
                              "list it under repositories: with a gpgkey to check them")
        for repo in r.repositories:
            sections += [f"[rain-{repo.name}]", f"name={repo.name}", f"baseurl={repo.url}"]
            if repo.gpgkey and "://" in repo.gpgkey:
                sections += ["gpgcheck=1", f"gpgkey={repo.gpgkey}"]
            elif repo.gpgkey:
                key = work / f"key-{repo.name}.asc"
                key.write_bytes(ctx.loaded.inputs[repo.gpgkey])
                sections += ["gpgcheck=1", f"gpgkey=file://{key}"]
            elif repo.trusted:
                sections += ["gpgcheck=0"]
            else:
                raise RecipeError(f"repositories: {repo.name!r} has no gpgkey",
                                  hint="add `gpgkey: <file>` or, for a local repository, `trusted: true`")
            sections.append("")
        conf = work / "dnf.conf"
        conf.write_text("\n".join(sections))
        return conf, reposdir

    def installed(self, ctx: BuildContext) -> list[Package]:
        root = ctx.handle.root
        if not (root / "var/lib/rpm").is_dir():
            return []
        out = command.run(["rpm", f"--root={root}", "--dbpath=/var/lib/rpm", "-qa", "--qf",
                           "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n"],
                          what="rpm -qa", keep=100000).output
        pkgs = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                pkgs.append(Package(parts[0], parts[1].removeprefix("0:"), parts[2]))
        return sorted(pkgs, key=lambda p: p.name)

    def finish(self, ctx: BuildContext) -> None:
        root = ctx.handle.root
        for sub in ("var/cache/dnf", "var/cache/yum"):
            d = root / sub
            if d.is_dir() and not d.is_symlink():
                command.run(["rm", "-rf", "--one-file-system", "--", str(d)], what="cleaning the dnf cache")


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


def _dnf_error(output: str, ctx: BuildContext) -> Exception:
    r = ctx.recipe
    m = _MISSING.search(output)
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
