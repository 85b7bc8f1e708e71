"""Bootstrappers: one per OS family, looked up lazily by family (`OsFamily.bootstrapper()`).

A bootstrapper fills the builder's root with a base system (from the base
cache when it can), installs the recipe's packages with the image's own
package manager, lists what is installed, and tidies up before packing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rain.generate.context import BuildContext
from rain.generate.layers import stack_on
from rain.generate.recipe import OsFamily


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    license: str | None = None  # as the package's metadata states it (rain.image.licenses), None: not stated


class Bootstrapper(Protocol):
    def bootstrap(self, ctx: BuildContext) -> None:
        """Base system into ctx.handle.root (cached where possible)."""

    def install(self, ctx: BuildContext, packages: list[str]) -> None:
        """Add packages with the image's package manager (also used after a clone)."""

    def installed(self, ctx: BuildContext) -> list[Package]: ...

    def finish(self, ctx: BuildContext) -> None:
        """Drop package-manager caches and build-only state from the image."""

    def tidy(self, root: Path, epoch: int | None) -> None:
        """On this host, the finished tree at root just before it is packed: what the package manager left that
        differs between two builds of the same inputs, or names this host, made the same (`epoch`: the
        build's source date epoch, None if it has none)."""

    def source_epoch(self, root: Path) -> int | None:
        """The image's source date epoch when none is given, read on this host from the tree at root (the base
        system, before the recipe's packages go in): a time the package versions alone decide (None: the
        tree's times are not clamped)."""


def place_base(ctx: BuildContext, base: Path) -> None:
    """Make the cached base at `base` the image root where the build runs: a layer under it on this host;
    on a builder VM on this host, its squashfs image mounted there as the lower layer (only the upper layer
    comes back, laid over the same base here); else sent to the builder machine. ctx.facts["base_layer"]
    says which."""
    if ctx.builder.local:
        ctx.facts["base_layer"] = stack_on(base, ctx.handle.root, ctx.handle.spec.workdir, ctx.layers)
        return
    key = str(ctx.facts.get("base_key") or "")
    with ctx.reporter.step("send the base system to the builder"):
        if key and ctx.builder.attach_base(ctx.handle, lambda: ctx.cache.base_image(key)):
            stack_on(base, ctx.handle.root, ctx.handle.spec.workdir, ctx.layers)  # what fetch lays the layer on
            ctx.facts["base_layer"] = "attached"
        else:
            ctx.builder.push(ctx.handle, base)
            ctx.facts["base_layer"] = "sent"


def get_bootstrapper(family: OsFamily) -> Bootstrapper:
    return family.bootstrapper()()
