"""Where a build runs. Builders are looked up by name (`BuilderName.builder()`, `.provider()`) and
imported lazily; the table of names lives with the enum, in rain/generate/recipe.py.

A builder gives the bootstrapper and the customization steps an image root
to work in. `run` executes an argv list *inside* the image (a chroot, on this
host or in a builder VM); `outside` runs an argv list in the builder's own
system (the host for `local`, the VM otherwise), where the bootstrap tools
live; `put`/`get` move single files in and out, resolving paths inside the
image (so a symlink in the image can never point them at the host).

Lifecycle: `start(spec)` → Handle; `handle.inner_root` is where the image
root is *in the builder's system* and `handle.root` where it is (or will be,
after `fetch`) on this host. `local` builders work on `handle.root` directly
(`inner_root == str(root)`, `fetch` does nothing). VM builders boot a machine
in `start`, build in it, and `fetch` streams the finished tree back into
`handle.root`; `stop(handle)` undoes everything the builder set up (mounts,
policy files, the VM). The caller owns `spec.workdir` and removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rain.generate.recipe import BuilderName
from rain.host.command import Result
from rain.plugins import choice

if TYPE_CHECKING:
    from rain.config import Settings
    from rain.generate.builders.machine import Provider
    from rain.generate.builders.remote import Session
    from rain.progress import Reporter
    from rain.repository.base import Repository


@dataclass(frozen=True)
class BuildSpec:
    name: str
    workdir: Path
    debian: bool = True
    """Debian-like image: keep services from starting with policy-rc.d."""
    log_file: Path | None = None
    on_error_keep: bool = False
    """A VM builder leaves a failed machine running for inspection (and says how to reach it)."""
    reporter: Reporter | None = None
    """Where a VM builder shows slow one-time work before the machine is up (qemu's first builder image)."""


@dataclass
class Handle:
    spec: BuildSpec
    root: Path
    """The image root on this host (for VM builders: filled by `fetch`)."""
    inner_root: str = ""
    """The image root in the builder's own system (the same path for `local`)."""
    workspace: str = ""
    """The build's scratch directory in the builder's own system, outside the image (spec.workdir for `local`)."""
    undo: ExitStack = field(default_factory=ExitStack)
    entered: bool = False
    remote: Session | None = None
    """VM builders: their session on the machine the build runs on."""
    upper: str = ""
    """VM builders with an attached base (attach_base): the overlay's upper directory on the machine."""
    env: dict[str, str] = field(default_factory=dict)
    """Set for every command `run` runs in the image: SOURCE_DATE_EPOCH once the build knows it, so what
    packages make at install time (an initramfs) carries the image's times, not the build's."""


class Builder(Protocol):
    name: str
    local: bool
    """True: the image root is a directory on this host throughout (no fetch needed)."""

    def start(self, spec: BuildSpec) -> Handle: ...

    def run(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
            what: str | None = None) -> Result: ...

    def outside(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
                what: str | None = None, check: bool = True, cleanup: bool = False) -> Result:
        """Run argv in the builder's own system (not chrooted into the image)."""

    def exists(self, handle: Handle, path: str) -> bool:
        """Whether path exists inside the image (a dangling symlink counts)."""

    def push(self, handle: Handle, source: Path | None = None, dest: str | None = None) -> None:
        """Send the tree at `source` (default handle.root: a clone) on this host to the image root in the
        builder (a cached base system, a clone, register's copy), or to `dest`, a directory under
        handle.workspace (dnf's configuration and a recipe's file:// repositories)."""

    def attach_base(self, handle: Handle, image: Callable[[], Path]) -> bool:
        """A VM on this host: mount the base system's image (`image()`, made when first needed) read-only
        under the image root on the machine, so the base is not sent and only its changes come back
        (fetch lays them over handle.root, which must then show the same base). False: push the tree."""

    def fetch(self, handle: Handle) -> None:
        """Undo the chroot set-up and bring the finished image root into handle.root on this host."""

    def put(self, handle: Handle, data: bytes, path: str, mode: str = "0644",
            owner: str = "root", group: str = "root") -> None: ...

    def get(self, handle: Handle, path: str) -> bytes: ...

    def stop(self, handle: Handle, failed: bool = False) -> str | None:
        """Undo the set-up; idempotent. VM builders release the machine, or with failed and
        spec.on_error_keep leave it running and return one line saying how to reach it."""


def builder_name(name: str) -> BuilderName:
    return choice(BuilderName, name, "builder")


def get_provider(name: str, settings: Settings, repo: Repository | None = None) -> Provider:
    """The VM provider `name` with its validated settings (no VM started yet)."""
    return builder_name(name).provider()(settings, repo)


def get_builder(name: str, settings: Settings | None = None, repo: Repository | None = None,
                provider: Provider | None = None) -> Builder:
    """The builder `name`; VM builders need settings (and the repository, for builder images)."""
    key = builder_name(name)
    if not key.is_vm:
        return key.builder()()
    if provider is None:
        if settings is None:
            raise TypeError(f"the {key.value} builder needs Rain's settings to launch its machines")
        provider = get_provider(name, settings, repo)
    from rain.generate.builders.remote import SSHBuilder

    return SSHBuilder(provider)
