"""Bootstrappers: one per OS family, looked up lazily by family (`OsFamily.bootstrapper()`).

A bootstrapper fills the builder's root with a base system (from the base
cache when it can), installs the recipe's packages with the image's own
package manager, lists what is installed, and tidies up before packing.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Protocol

from rain.generate.builders.base import Builder, Handle
from rain.generate.cache import Cache
from rain.generate.loader import LoadedRecipe
from rain.generate.progress import Reporter
from rain.generate.recipe import OsFamily, Recipe


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str


@dataclass
class BuildContext:
    loaded: LoadedRecipe
    mirror: str
    cache: Cache
    builder: Builder
    handle: Handle
    reporter: Reporter
    use_cache: bool = True
    layers: ExitStack = field(default_factory=ExitStack)
    """Undo for the root's layers (overlay mount, base lock): closed after packing."""
    facts: dict[str, object] = field(default_factory=dict)
    """What happened, for the manifest: base cache key and hit, clone source, ..."""

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe


class Bootstrapper(Protocol):
    def bootstrap(self, ctx: BuildContext) -> None:
        """Base system into ctx.handle.root (cached where possible)."""

    def install(self, ctx: BuildContext, packages: list[str]) -> None:
        """Add packages with the image's package manager (also used after a clone)."""

    def installed(self, ctx: BuildContext) -> list[Package]: ...

    def finish(self, ctx: BuildContext) -> None:
        """Drop package-manager caches and build-only state from the image."""


def get_bootstrapper(family: OsFamily) -> Bootstrapper:
    return family.bootstrapper()()
