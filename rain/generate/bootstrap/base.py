"""Bootstrappers: one per OS family, looked up lazily by family (`OsFamily.bootstrapper()`).

A bootstrapper fills the builder's root with a base system (from the base
cache when it can), installs the recipe's packages with the image's own
package manager, lists what is installed, and tidies up before packing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rain.generate.context import BuildContext
from rain.generate.recipe import OsFamily


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str


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
