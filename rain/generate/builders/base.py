"""Where a build runs. Builders are looked up by name and imported lazily.

A builder gives the bootstrapper and the customization steps an image root
to work in. `run` executes an argv list *inside* the image (chroot or VM);
`put`/`get` move single files in and out, resolving paths inside the image
(so a symlink in the image can never point them at the host).

Lifecycle: `start(spec)` → Handle whose `root` is a host directory the
bootstrapper fills; `run/put/get` as often as needed; `stop(handle)` undoes
everything the builder set up (mounts, policy files) and leaves the finished
tree at `handle.root` for packing. The caller owns `spec.workdir` and removes it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from rain.errors import InvalidInput
from rain.generate.command import Result


class BuilderName(StrEnum):
    LOCAL = "local"


REGISTRY: dict[BuilderName, str] = {
    BuilderName.LOCAL: "rain.generate.builders.local:LocalBuilder",
}


@dataclass(frozen=True)
class BuildSpec:
    name: str
    workdir: Path
    debian: bool = True
    """Debian-like image: keep services from starting with policy-rc.d."""
    log_file: Path | None = None


@dataclass
class Handle:
    spec: BuildSpec
    root: Path
    undo: ExitStack = field(default_factory=ExitStack)
    entered: bool = False


class Builder(Protocol):
    name: str

    def start(self, spec: BuildSpec) -> Handle: ...

    def run(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
            what: str | None = None) -> Result: ...

    def put(self, handle: Handle, data: bytes, path: str, mode: str = "0644",
            owner: str = "root", group: str = "root") -> None: ...

    def get(self, handle: Handle, path: str) -> bytes: ...

    def stop(self, handle: Handle) -> None: ...


def get_builder(name: str) -> Builder:
    try:
        key = BuilderName(name)
    except ValueError:
        raise InvalidInput(f"unknown builder {name!r}",
                           hint="valid builders: " + ", ".join(b.value for b in BuilderName)) from None
    module, _, cls = REGISTRY[key].partition(":")
    return getattr(importlib.import_module(module), cls)()
