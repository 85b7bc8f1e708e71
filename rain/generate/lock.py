"""Lock files: the exact packages a recipe's build installed, so the next build installs those again.

    fg-image generate recipes/hpc.yaml --lock     # writes recipes/hpc.lock from the build
    fg-image lock --update recipes/hpc.yaml       # a new build, ignoring the lock, writes it again

A lock lists every installed package with its exact version, architecture and
where it came from: for apt the archive (suite/component), for dnf the
repository (the recipe's name for it, or `mirror`). When a
recipe has a lock beside it (`NAME.lock` for `NAME.yaml`), its build:

- keys its caches by the lock too (the base system and the result);
- installs those versions: apt is pinned to them (Pin-Priority 1001, from the
  first package of the base system on) and the recipe's packages are asked
  for as NAME=VERSION; dnf is given every package as NAME-VERSION.ARCH;
- checks what it installed against the lock before packing: the first package
  whose locked version the mirror no longer offers (another version was
  installed) is a one-line error, and nothing is cached or stored. So is a
  package the lock does not list, or one it lists that the build no longer
  installs (the recipe changed: `fg-image lock --update`).

A Debian mirror keeps one version of each package per suite, so a lock is
reproducible for as long as the mirror has not moved on, or for ever from a
snapshot mirror (docs/reproducible.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from rain.errors import BuildError, RecipeError
from rain.host.files import replace_file

SCHEMA = 1
LOCK_MAX = 4 << 20
"""Bytes of a lock file read: thousands of packages take a few hundred KiB."""

PackageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+~^:_-]{0,199}$")]
Arch = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
Archive = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9./_@+-]{0,199}$")]


class LockedPackage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PackageName
    version: Version
    arch: Arch
    archive: Archive | None = None


OsWord = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class LockOs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: OsWord
    release: OsWord
    arch: OsWord


class LockFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lock: int = Field(ge=SCHEMA, le=SCHEMA)
    os: LockOs
    mirror: str | None = None
    """The mirror the lock was made from (said, not used: the recipe's mirror is the one builds use)."""
    packages: list[LockedPackage] = Field(min_length=1, max_length=100_000)


@dataclass(frozen=True)
class Lock:
    path: Path
    data: LockFile
    remedy: str = ""
    """The hint for a build the lock no longer describes; "" = write the lock again (`fg-image rebuild` gives
    its own: its lock comes from the image's provenance, not from a file the user keeps)."""

    @property
    def packages(self) -> list[LockedPackage]:
        return self.data.packages

    @property
    def digest(self) -> str:
        """What the lock pins (its OS and packages), for the cache keys; not its comments or mirror."""
        what = {"os": self.data.os.model_dump(), "packages": [p.model_dump() for p in self.packages]}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def locks(self, family: str, release: str, arch: str) -> bool:
        """Whether this is a lock of that OS (a recipe built with --set os.release=... is another build)."""
        o = self.data.os
        return (o.family, o.release, o.arch) == (family, release, arch)

    @property
    def os_text(self) -> str:
        return f"{self.data.os.family} {self.data.os.release} {self.data.os.arch}"

    def version_of(self, name: str) -> str | None:
        return next((p.version for p in self.packages if p.name == name), None)

    @property
    def recipe(self) -> str:
        """The recipe file this lock is beside (NAME.yaml), as the hints name it."""
        return self.path.with_suffix(".yaml").name

    def gone(self, name: str, version: str, installed: str | None = None) -> BuildError:
        """The one-line error for a locked version the mirror no longer offers."""
        return BuildError(f"{self.path.name} pins {name} {version}, which the mirror no longer offers"
                          + (f" (it installed {installed})" if installed else ""),
                          hint=self.remedy or f"build from a mirror that still has it (a snapshot mirror), or run "
                                              f"`fg-image lock --update {self.recipe}`")

    def apt_preferences(self) -> str:
        """apt_preferences(5) pinning every locked package to its version, over any other candidate."""
        return "".join(f"Package: {p.name}\nPin: version {p.version}\nPin-Priority: 1001\n\n" for p in self.packages)


def lock_path(recipe_path: Path) -> Path:
    """NAME.lock beside NAME.yaml."""
    return recipe_path.with_suffix(".lock")


def read_lock(path: Path) -> Lock:
    """The lock at path, checked; a one-line RecipeError naming what is wrong and how to write it again."""
    fix = f"write it again with `fg-image lock --update {path.with_suffix('.yaml')}`, or remove it to build unlocked"
    try:
        with open(path, "rb") as f:
            raw = f.read(LOCK_MAX + 1)
    except OSError as e:
        raise RecipeError(f"cannot read the lock file {path}: {e.strerror}", hint=fix) from None
    if len(raw) > LOCK_MAX:
        raise RecipeError(f"{path} is larger than {LOCK_MAX >> 20} MiB, more than a lock file is", hint=fix)
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{path} is not a YAML lock file: {str(e).splitlines()[0]}", hint=fix) from None
    try:
        data = LockFile.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = " ".join(".".join(str(p) for p in err["loc"]).split())[:200] or "the file"  # keys are the file's
        raise RecipeError(f"{path}: {where}: {err['msg']}", hint=fix) from None
    names = [p.name for p in data.packages]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise RecipeError(f"{path}: packages: {twice} is there twice", hint=fix)
    return Lock(path, data)


def write_lock(path: Path, manifest: dict[str, Any], recipe_name: str) -> Path:
    """The lock of a finished build (its manifest), written atomically to path."""
    packages = []
    for p in manifest["packages"]:
        try:
            packages.append(LockedPackage(name=p["name"], version=p["version"], arch=p["arch"],
                                          archive=p.get("archive")).model_dump(exclude_none=True))
        except ValidationError as e:  # a name or version no lock can hold (the image's package database says it)
            what = " ".join(f"{p.get('name')} {p.get('version')}".split())[:160]  # one line, whatever it holds
            raise BuildError(f"cannot lock {what}: {e.errors()[0]['msg']}", hint="build without --lock") from None
    doc = {"lock": SCHEMA, "os": {k: manifest["os"][k] for k in ("family", "release", "arch")},
           "mirror": manifest.get("mirror"), "packages": packages}
    head = (f"# The exact packages of recipe {recipe_name}, written by fg-image from a build of it.\n"
            "# Its builds install these versions, and fail if the mirror no longer offers one;\n"
            f"# `fg-image lock --update {path.with_suffix('.yaml').name}` writes it again from a new build.\n")
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)
    return replace_file(path, (head + body).encode())


def check_installed(lock: Lock, installed: list[tuple[str, str]]) -> None:
    """What a build installed (name, version) against its lock: a one-line BuildError at the first difference."""
    changed = lock.remedy or f"the recipe changed: run `fg-image lock --update {lock.recipe}`"
    have = dict(installed)
    for p in lock.packages:
        got = have.get(p.name)
        if got is None:
            raise BuildError(f"{lock.path.name} lists {p.name} {p.version}, which the build no longer installs",
                             hint=changed)
        if got != p.version:
            raise lock.gone(p.name, p.version, got)
    extra = sorted(set(have) - {p.name for p in lock.packages})
    if extra:
        raise BuildError(f"the build installed {extra[0]} {have[extra[0]]}, which {lock.path.name} does not list",
                         hint=changed)


_POLICY_PACKAGE = re.compile(r"^(\S+?)(?::[a-z0-9]+)?:$")


def archives_from_policy(text: str) -> dict[str, str]:
    """`apt-cache policy PKG...` → package → the archive (suite/component) its installed version came from;
    "local" for one only dpkg knows (installed from a file). Under a package, a version line is
    " *** VERSION PRIO" (the installed one) or "     VERSION PRIO", and each is followed by its sources,
    "        PRIO URL SUITE/COMPONENT ARCH Packages" or "        100 /var/lib/dpkg/status"."""
    out: dict[str, str] = {}
    name: str | None = None
    installed = False
    for line in text.splitlines():
        head = _POLICY_PACKAGE.match(line)
        if head:
            name, installed = head.group(1), False
            continue
        tokens = line.split()
        if name is None or not line.startswith(" ") or not tokens:
            continue
        if tokens[0] == "***" or (len(tokens) == 2 and tokens[1].lstrip("-").isdigit()):  # a version line
            installed = tokens[0] == "***"
            if installed:
                out.setdefault(name, "local")
        elif installed and len(tokens) == 5 and tokens[0].lstrip("-").isdigit() and tokens[4] == "Packages":
            if out[name] == "local":  # the first archive that has it
                out[name] = tokens[2]
    return out
