"""generate(): a loaded recipe → artifacts + manifest (+ repository images).

    loaded = load_recipe("recipes/debian-bookworm-minimal.yaml")
    result = generate(loaded, settings, BuildOptions(upload=False), Reporter())
    result.artifacts  # ArtifactFile(format, path, size, sha256) for each format
    result.manifest   # the dict also stored as manifest.json and as provenance

prepare() validates everything (mirror, tools, arch, base image access) with
no side effects; generate() then builds, or reuses the result cache when the
recipe hash is already there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rain.arch import Architecture
from rain.config import Settings
from rain.errors import InvalidInput, RecipeError
from rain.generate import artifact, customize
from rain.generate.artifact import ArtifactFile
from rain.generate.bootstrap.base import Bootstrapper, get_bootstrapper
from rain.generate.builders.base import Builder, BuildSpec, get_builder
from rain.generate.cache import Cache, CacheKind
from rain.generate.context import BuildContext
from rain.generate.layers import remove_tree
from rain.generate.loader import LoadedRecipe
from rain.generate.lock import check_installed
from rain.generate.manifest import build_manifest, read_manifest, write_manifest
from rain.generate.mirror import resolve_mirror
from rain.generate.recipe import Format, Recipe, recipe_hash
from rain.host import command, reaper
from rain.host.files import replace_file
from rain.image import sbom
from rain.progress import Reporter
from rain.repository.base import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    output: Path | None = None
    """Also place the artifacts + manifest.json in this directory."""
    use_cache: bool = True
    upload: bool = True
    builder: str | None = None
    """--builder; None = the recipe's `builder:`, else local."""
    on_error_keep: bool = False
    """VM builders: leave a failed builder machine running for inspection."""
    epoch: int | None = None
    """SOURCE_DATE_EPOCH for this build (`fg-image rebuild` gives the recorded one); None: the environment's."""
    seed: str | None = None
    """Where a disk's identifiers come from (`fg-image rebuild` gives the recorded one); None: the recipe hash."""


def builder_name(recipe: Recipe, options: BuildOptions) -> str:
    """Where the build runs: --builder, else the recipe's `builder:`, else local."""
    return options.builder or (recipe.builder.value if recipe.builder else "local")


def needs_repository(recipe: Recipe, options: BuildOptions) -> bool:
    """Uploading, cloning a base image and the qemu builder's builder image all need the repository."""
    return options.upload or recipe.base is not None or builder_name(recipe, options) == "qemu"


@dataclass(frozen=True)
class Plan:
    loaded: LoadedRecipe
    mirror: str
    recipe_hash: str
    builder: Builder
    epoch: int | None = None
    """SOURCE_DATE_EPOCH as given; None: the build takes its packages' newest date (rain.image.tarball)."""
    reproducible: bool = True
    """False (the `reproducible` setting): no epoch unless given, random disk identifiers."""

    @property
    def result_key(self) -> str:
        """The result cache key: the recipe hash, plus the builder when it is not the local one
        (a build on another builder is other provenance, and is what its user asked to see)."""
        if self.builder.local:
            return self.recipe_hash
        return hashlib.sha256(f"{self.recipe_hash}:{self.builder.name}".encode()).hexdigest()


@dataclass(frozen=True)
class BuildResult:
    name: str
    recipe_hash: str
    directory: Path
    """Where the artifacts and manifest.json live (the result cache entry)."""
    artifacts: tuple[ArtifactFile, ...]
    manifest: dict[str, Any]
    cached: bool
    image_ids: dict[str, str] = field(default_factory=dict)
    """format → repository image id (empty with upload=False)."""
    output_files: tuple[Path, ...] = ()


def prepare(loaded: LoadedRecipe, settings: Settings, options: BuildOptions, repo: Repository | None = None) -> Plan:
    """Validate the whole build up front: no mounts, no downloads, no writes."""
    r = loaded.recipe
    mirror = resolve_mirror(r, settings.mirror)
    where = builder_name(r, options)
    host = Architecture.from_uname(platform.machine())
    if host is None or r.os.arch not in (host.deb, host.rpm):
        raise RecipeError(f"os.arch: {r.os.arch} cannot be built on this {platform.machine()} host "
                          f"with the {where} builder",
                          hint=f"use arch {host.deb if host else platform.machine()}")
    builder = get_builder(where, settings, repo)  # validates its settings; starts nothing
    if not builder.local and not r.os.family.is_debian:
        command.need("rpm")  # the fetched image's package list is read here (dnf itself runs on the machine)
    if options.upload and repo is None:
        raise InvalidInput("no repository to upload to", hint="pass --no-upload or configure a repository")
    if r.base is None and builder.local:  # a VM builder's image has the bootstrap tools
        if r.os.family.is_debian:
            if not (shutil.which("mmdebstrap", path=command.SAFE_PATH) or
                    shutil.which("debootstrap", path=command.SAFE_PATH)):
                command.need("mmdebstrap")
        elif not shutil.which("dnf", path=command.SAFE_PATH):
            command.need("yum")
    artifact.check_tools(list(r.formats))
    if r.base is not None:
        from rain.generate.bootstrap.clone import check_base

        check_base(repo, r)
    epoch = options.epoch if options.epoch is not None else given_epoch()
    if loaded.lock is not None and r.os.family.is_debian and r.base is None \
            and not shutil.which("mmdebstrap", path=command.SAFE_PATH):
        raise RecipeError(f"{loaded.lock.path.name}: a locked build pins the base system's packages with "
                          "mmdebstrap on this host, and this host has none",
                          hint="install mmdebstrap (scripts/setup.sh does), or remove the lock to build unlocked")
    lock = loaded.lock.digest if loaded.lock is not None else None
    same = bool(settings.reproducible)
    return Plan(loaded, mirror, recipe_hash(r, mirror, loaded.inputs, epoch, lock, same), builder, epoch, same)


def given_epoch(environ: Mapping[str, str] = os.environ) -> int | None:
    """SOURCE_DATE_EPOCH from the environment (the reproducible-builds convention), if set."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput(f"SOURCE_DATE_EPOCH={text[:40]!r} is not a time",
                           hint="give whole seconds since 1970 (e.g. `date +%s`), or unset it")
    return int(text)


def generate(loaded: LoadedRecipe, settings: Settings, options: BuildOptions, reporter: Reporter,
             repo: Repository | None = None) -> BuildResult:
    reporter = reporter.child("") if reporter.timings else reporter  # this build's timings only
    with reporter.step("prepare"):
        plan = prepare(loaded, settings, options, repo)
    if loaded.lock_note:
        reporter.info(loaded.lock_note)
    elif loaded.lock is not None:
        reporter.info(f"locked by {loaded.lock.path.name}: {len(loaded.lock.packages)} packages at their versions")
    cache = Cache.for_data(settings.data_path)
    hit = cache.result(plan.result_key) if options.use_cache else None
    if hit is not None:
        reporter.info(f"identical recipe built before: reusing {plan.recipe_hash[:12]}")
        result = _from_dir(hit, plan, cached=True)
    else:
        result = _build(plan, cache, options, reporter, repo)
    if options.output:
        result = _copy_out(result, options.output)
    if options.upload:
        from rain.generate.upload import upload

        with reporter.step("upload"):
            ids = upload(repo, loaded.recipe, result)
        result = BuildResult(**{**result.__dict__, "image_ids": ids})
    return result


def _build(plan: Plan, cache: Cache, options: BuildOptions, reporter: Reporter, repo: Repository | None) -> BuildResult:
    r = plan.loaded.recipe
    work_root = cache.root.parent / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"{r.name[:40]}-", dir=work_root))
        reaper.track_path(workdir)  # unmounted and removed even if this process is SIGKILLed
        stack.callback(reaper.untrack_path, workdir)
        stack.callback(remove_tree, workdir)
        layers = stack.enter_context(ExitStack())  # undone after the builder's own mounts
        spec = BuildSpec(name=r.name, workdir=workdir, debian=r.os.family.is_debian,
                         log_file=workdir / "build.log", on_error_keep=options.on_error_keep, reporter=reporter)
        builder = plan.builder
        vm = not builder.local
        with reporter.step(f"start {builder.name} builder") if vm else nullcontext():
            handle = builder.start(spec)
        finished = False

        def stop() -> None:
            kept = builder.stop(handle, failed=not finished)
            if kept:
                reporter.info(f"kept the failed builder machine: {kept}")
        stack.callback(stop)
        ctx = BuildContext(plan.loaded, plan.mirror, cache, builder, handle, reporter, options.use_cache, layers,
                           reproducible=plan.reproducible)
        boot = get_bootstrapper(r.os.family)
        if r.base is not None:
            from rain.generate.bootstrap.clone import clone

            with reporter.step("clone base image"):
                clone(ctx, repo)
                _known_epoch(plan, boot, ctx)  # before the tree here goes to the machine
                if vm:
                    builder.push(handle)
                    remove_tree(handle.root)  # fetch fills it again with the finished tree
                    handle.root.mkdir()
        else:
            boot.bootstrap(ctx)
            _known_epoch(plan, boot, ctx)
        with reporter.step("packages"):
            boot.install(ctx, r.all_packages())  # may learn the epoch (rhel.py: dnf's resolution)
        with reporter.step("customize"):
            customize.place_files(ctx)
            customize.add_users(ctx)
            customize.enable_services(ctx)
        customize.run_steps(ctx)
        with reporter.step("finish"):
            boot.finish(ctx)
            with reporter.step("fetch the image from the builder") if vm else nullcontext():
                builder.fetch(handle)
            finished = True
            builder.stop(handle)
            customize.tidy(ctx)
            packages = boot.installed(ctx)
            if plan.loaded.lock is not None:  # before packing: a build that is not the lock's is not kept
                check_installed(plan.loaded.lock, [(p.name, p.version) for p in packages])
        staging = workdir / "out"
        known = handle.env.get("SOURCE_DATE_EPOCH")
        epoch = int(known) if known is not None else None
        if epoch is None and plan.reproducible:  # no base on this host (bootstrapped on the machine)
            epoch = boot.source_epoch(handle.root)
        boot.tidy(handle.root, epoch)
        seed = (options.seed or plan.recipe_hash) if plan.reproducible else None  # None: random disk ids
        files = artifact.pack(handle.root, staging, r.name, list(r.formats), r.disk_size, reporter, epoch, seed)
        ctx.facts["source_date_epoch"] = epoch
        ctx.facts["disk_seed"] = seed
        manifest = build_manifest(recipe=r, recipe_text=plan.loaded.text, recipe_hash=plan.recipe_hash,
                                  mirror=plan.mirror, builder=builder.name, packages=packages,
                                  artifacts=files, timings=reporter.timings, facts=ctx.facts)
        write_manifest(manifest, staging)
        final = cache.result_dir(plan.result_key)
        with cache.lock(CacheKind.RESULTS, plan.result_key):
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    return _from_dir(final, plan, cached=False)


def _known_epoch(plan: Plan, boot: Bootstrapper, ctx: BuildContext) -> None:
    """The build's source date epoch, as SOURCE_DATE_EPOCH for every command it runs in the image (the one
    place the build keeps it): the one given, else (reproducible builds) the base system's package versions'
    (rain.image.tarball.packaged_epoch), known before the recipe's packages go in so that what they make at
    install time (an initramfs) takes it too. Unset: not known yet, or the build's own times."""
    epoch = plan.epoch
    if epoch is None and plan.reproducible and ctx.base_tree is not None:
        epoch = boot.source_epoch(ctx.base_tree)
    if epoch is not None:
        ctx.handle.env["SOURCE_DATE_EPOCH"] = str(epoch)


def _from_dir(directory: Path, plan: Plan, cached: bool) -> BuildResult:
    manifest = read_manifest(directory)
    files = tuple(ArtifactFile(Format(a["format"]), directory / a["file"], a["size"], a["sha256"], a.get("bootable"))
                  for a in manifest["artifacts"])
    missing = [f.path.name for f in files if not f.path.is_file()]
    if missing:
        raise RecipeError(f"cached result {directory} lacks {', '.join(missing)}",
                          hint="run `fg-image cache prune --kind results` or build with --no-cache")
    return BuildResult(plan.loaded.recipe.name, plan.recipe_hash, directory, files, manifest, cached)


def _copy_out(result: BuildResult, out: Path) -> BuildResult:
    out.mkdir(parents=True, exist_ok=True)
    placed = []
    for src in [*(a.path for a in result.artifacts), result.directory / "manifest.json"]:
        dest = out / src.name
        tmp = out / f".{src.name}.{uuid.uuid4().hex[:8]}"
        # a copy, not a link: whoever boots or edits the output must not change the cache
        command.run(["cp", "--reflink=auto", "--sparse=always", str(src), str(tmp)], what="copying out")
        os.replace(tmp, dest)
        placed.append(dest)
    for a in result.artifacts:  # each file's SBOM beside it: the same bytes `fg-image sbom ID` prints once stored
        placed.append(replace_file(out / f"{a.path.name}.spdx.json",
                                   sbom.render(result.manifest, a.sha256, str(a.format))))
    return BuildResult(**{**result.__dict__, "output_files": tuple(placed)})
