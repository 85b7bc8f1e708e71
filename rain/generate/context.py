"""BuildContext: the one object every build step receives (bootstrap, install, customize, clone, pack).

It holds what a step may use (the loaded recipe, mirror, cache, builder and its
handle, the reporter) and what steps leave for later: the layers' undo stack,
closed after packing, and the facts recorded in the manifest. Steps add facts;
they do not replace the other fields.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rain.generate.builders.base import Builder, Handle
from rain.generate.cache import Cache
from rain.generate.loader import LoadedRecipe
from rain.generate.recipe import Recipe
from rain.progress import Reporter


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
    base_tree: Path | None = None
    """The base system's tree on this host (the cached base, a clone's unpacked image), once there is one:
    where the source date epoch is read before the recipe's packages go in."""
    reproducible: bool = True
    """The `reproducible` setting: an epoch the packages decide, for the package manager's records too."""

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe
