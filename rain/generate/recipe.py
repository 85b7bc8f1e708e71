"""The recipe model: what an image contains, validated before anything runs.

Every value a user writes is checked here against a strict pattern, so that
later stages can pass it as one argv element without a shell ever seeing it.
Loading (YAML with line numbers, jinja2 variables, --set overrides) lives in
loader.py; batch files and matrices in batch.py.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from rain.arch import DEB_NAMES, Architecture
from rain.config import parse_size
from rain.host.ssh import SSH_KEY_RE
from rain.plugins import load_class
from rain.releases import RELEASES
from rain.repository.models import ID_RE, NAME_RE, TAG_RE, USER_RE, matching

if TYPE_CHECKING:
    from collections.abc import Callable

    from rain.config import Settings
    from rain.generate.bootstrap.base import Bootstrapper
    from rain.generate.builders.base import Builder
    from rain.generate.builders.machine import Provider
    from rain.repository.base import Repository


class OsFamily(StrEnum):
    DEBIAN = "debian"
    UBUNTU = "ubuntu"
    ROCKY = "rocky"
    ALMA = "alma"
    CENTOS = "centos"
    FEDORA = "fedora"

    @property
    def is_debian(self) -> bool:
        return self in (OsFamily.DEBIAN, OsFamily.UBUNTU)

    def bootstrapper(self) -> type[Bootstrapper]:
        """This family's bootstrapper class (imported now, not at start-up)."""
        path = _BOOTSTRAPPERS["debian" if self.is_debian else "rhel"]
        return cast("type[Bootstrapper]", load_class(path))


_BOOTSTRAPPERS = {
    "debian": "rain.generate.bootstrap.debian:DebianBootstrapper",
    "rhel": "rain.generate.bootstrap.rhel:RhelBootstrapper",
}


class Variant(StrEnum):
    """How much the bootstrapper installs before the recipe's packages.

    Debian/Ubuntu: the mmdebstrap variant of the same name. RHEL family:
    minbase installs only the recipe's packages and their dependencies;
    standard adds the @core group.
    """

    MINBASE = "minbase"
    IMPORTANT = "important"
    STANDARD = "standard"


class Format(StrEnum):
    TAR_ZST = "tar.zst"
    RAW = "raw"
    QCOW2 = "qcow2"
    SQUASHFS = "squashfs"


PACKAGE_RE = re.compile(r"^@?[A-Za-z0-9][A-Za-z0-9._+:~-]{0,127}$")
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]{0,127}$")
GROUP_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
URL_RE = re.compile(r"^(https?|file)://[^\s'\"\\`$;|&<>]+$")
SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")


def image_path(value: str, what: str = "path") -> str:
    """An absolute, normalized path inside the image (no '..', no NUL, no newline)."""
    if not value.startswith("/") or "\x00" in value or "\n" in value:
        raise ValueError(f"bad {what} {value!r}: use an absolute path inside the image, e.g. /etc/motd")
    if ".." in value.split("/") or posixpath.normpath(value) != value.rstrip("/") or value == "/":
        raise ValueError(f"bad {what} {value!r}: no '..', '//' or trailing '/'; name a file")
    return value


PackageName = Annotated[str, AfterValidator(lambda v: matching(
    PACKAGE_RE, v, "package name", "letters, digits, . + - _ : ~ only (no spaces or shell characters)"))]
UnitName = Annotated[str, AfterValidator(lambda v: matching(
    UNIT_RE, v, "service", "a systemd unit name, e.g. ssh or munge.service"))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OsSpec(Strict):
    family: OsFamily
    release: str = Field(description="codename or number, e.g. bookworm or 12, 9 for Rocky 9")
    arch: str = Field(default="amd64", description="amd64/x86_64 or arm64/aarch64; the local builder "
                      "builds the host's architecture")

    @field_validator("release", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _known(self) -> OsSpec:
        known = RELEASES[self.family]
        if str(self.release) not in known:
            names = sorted({v for v in known.values()})
            raise ValueError(f"unknown release {self.release!r} for {self.family}: use one of "
                             + ", ".join(names))
        arch = Architecture.lookup(self.arch)
        if arch is None:
            raise ValueError(f"unknown arch {self.arch!r}: use one of {', '.join(DEB_NAMES)}")
        object.__setattr__(self, "release", known[str(self.release)])
        object.__setattr__(self, "arch", arch.deb if self.family.is_debian else arch.rpm)
        return self


class RepoSpec(Strict):
    """An extra package repository.

    Debian/Ubuntu: `deb [options] url suite components`. RHEL family: a dnf
    repository with `url` as its baseurl.
    """

    name: str = Field(description="short id: lowercase letters, digits, _ -")
    url: str = Field(description="http(s):// or file:// URL (the baseurl for dnf)")
    suite: str | None = Field(default=None, description="Debian/Ubuntu: suite (default: the recipe's release)")
    components: list[str] = Field(default_factory=lambda: ["main"], description="Debian/Ubuntu only")
    trusted: bool = Field(default=False, description="skip signature checks (local repositories only)")
    gpgkey: str | None = Field(default=None, description="key file (path relative to the recipe) or URL")

    _n = field_validator("name")(lambda v: matching(GROUP_RE, v, "repository name", "lowercase letters, digits, _ -"))
    _u = field_validator("url")(lambda v: matching(URL_RE, v, "repository url", "an http(s):// or file:// URL"))

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str | None) -> str | None:
        return None if v is None else matching(SUITE_RE, v, "suite", "e.g. bookworm-backports")

    @field_validator("components")
    @classmethod
    def _components(cls, v: list[str]) -> list[str]:
        return [matching(GROUP_RE, c, "component", "e.g. main, contrib") for c in v]


class FileSpec(Strict):
    """A file placed into the image: inline `content` or a `source` file next to the recipe."""

    path: str = Field(description="absolute path inside the image")
    content: str | None = Field(default=None, description="the file's text")
    source: str | None = Field(default=None, description="path relative to the recipe file")
    mode: str = Field(default="0644", description="octal mode, quoted")
    owner: str = "root"
    group: str = "root"

    _p = field_validator("path")(lambda v: image_path(v))
    _m = field_validator("mode")(lambda v: matching(MODE_RE, v, "mode", "octal, e.g. 0644"))
    _o = field_validator("owner", "group")(lambda v: matching(USER_RE, v, "owner", "a user or group name"))

    @model_validator(mode="after")
    def _one(self) -> FileSpec:
        if (self.content is None) == (self.source is None):
            raise ValueError(f"file {self.path}: give exactly one of content or source")
        return self


class UserSpec(Strict):
    name: str
    groups: list[str] = Field(default_factory=list, description="created if missing")
    ssh_keys: list[str] = Field(default_factory=list, description="public key lines for ~/.ssh/authorized_keys")
    sudo: bool = Field(default=False, description="passwordless sudo (adds the sudo package)")
    shell: str = "/bin/bash"

    _n = field_validator("name")(lambda v: matching(USER_RE, v, "user name", "lowercase letters, digits, _ . -"))
    _s = field_validator("shell")(lambda v: image_path(v, "shell"))

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        return [matching(GROUP_RE, g, "group", "lowercase letters, digits, _ -") for g in v]

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return [matching(SSH_KEY_RE, k.strip(), "ssh key", "one public key line, e.g. 'ssh-ed25519 AAAA... me@host'")
                for k in v]


class RunStep(Strict):
    """A command run inside the image root: an argv list, or a script file next to the recipe."""

    argv: list[str] | None = Field(default=None, description="command and arguments; a bare list is short for this")
    script: str | None = Field(default=None, description="script file next to the recipe, run with its #! line")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"argv": data}
        return data

    @model_validator(mode="after")
    def _one(self) -> RunStep:
        if (self.argv is None) == (self.script is None):
            raise ValueError("a run step is an argv list or {script: file}")
        if self.argv is not None:
            if not self.argv or any(not isinstance(a, str) or "\x00" in a for a in self.argv):
                raise ValueError("a run step's argv is a non-empty list of strings")
        return self


class UploadSpec(Strict):
    name: str | None = Field(default=None, description="image name in the repository (default: the recipe name)")
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    public: bool = Field(default=False, description="readable by every user of the repository")
    share_with: list[str] = Field(default_factory=list, description="users who may read the images")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else matching(NAME_RE, v, "image name", "letters, digits, . _ + -")

    _t = field_validator("tags")(lambda v: [matching(TAG_RE, t, "tag", "letters, digits, . _ : + -") for t in v])
    _s = field_validator("share_with")(lambda v: [matching(USER_RE, u, "user", "a user name") for u in v])


class BuilderName(StrEnum):
    LOCAL = "local"
    QEMU = "qemu"
    OPENNEBULA = "opennebula"
    OPENSTACK = "openstack"

    @property
    def is_vm(self) -> bool:
        """Builds on a machine a provider launches (`remote.SSHBuilder` builds there), not on this host."""
        return self in _PROVIDERS

    def builder(self) -> Callable[[], Builder]:
        """The class of the builder that runs on this host (`local` only; VM builders are SSHBuilder)."""
        return cast("Callable[[], Builder]", load_class(_LOCAL_BUILDERS[self]))

    def provider(self) -> Callable[[Settings, Repository | None], Provider]:
        """The class that launches this builder's machines, built from (settings, repo) (VM builders only)."""
        return cast("Callable[[Settings, Repository | None], Provider]", load_class(_PROVIDERS[self]))


_LOCAL_BUILDERS = {BuilderName.LOCAL: "rain.generate.builders.local:LocalBuilder"}
_PROVIDERS = {
    BuilderName.QEMU: "rain.generate.builders.qemu:QemuProvider",
    BuilderName.OPENNEBULA: "rain.generate.builders.opennebula:OpenNebulaProvider",
    BuilderName.OPENSTACK: "rain.generate.builders.openstack:OpenStackProvider",
}
"""VM builders: a Provider launches machines, `remote.SSHBuilder` builds on them."""


class Recipe(Strict):
    """An image recipe: what to install, configure and produce."""

    name: str = Field(description="image name; letters, digits, . _ + -")
    os: OsSpec = Field(description="family, release, arch")
    variant: Variant = Field(default=Variant.MINBASE, description="how much base system to bootstrap")
    mirror: str | None = Field(default=None,
                                description="package mirror URL; default: the host's apt/dnf configuration")
    repositories: list[RepoSpec] = Field(default_factory=list, description="extra package repositories")
    packages: list[PackageName] = Field(default_factory=list, description="installed with the image's package "
                                        "manager (apt-get / dnf), without recommends")
    files: list[FileSpec] = Field(default_factory=list, description="placed after the packages")
    users: list[UserSpec] = Field(default_factory=list, description="created after the files")
    services: list[UnitName] = Field(default_factory=list, description="systemd units to enable")
    run: list[RunStep] = Field(default_factory=list, description="run inside the image, last, in order")
    disk_size: int | None = Field(default=None, description="raw/qcow2 disk size, e.g. 4G; default: fits the files")
    formats: list[Format] = Field(default_factory=lambda: [Format.TAR_ZST], description="artifacts to produce")
    upload: UploadSpec = Field(default_factory=lambda: UploadSpec(), description="how the images are stored")
    base: str | None = Field(default=None, description="repository image id (tar.zst) to clone and extend")
    builder: BuilderName | None = Field(default=None, description="where the build runs: local (a chroot on "
                                          "this host), qemu, opennebula or openstack (a builder VM); "
                                          "--builder overrides it; default local")
    vars: dict[str, Any] = Field(default_factory=dict, description="jinja2 variables for this recipe")

    _n = field_validator("name")(lambda v: matching(NAME_RE, v, "name", "letters, digits, . _ + - (max 128)"))

    @field_validator("vars")
    @classmethod
    def _vars(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            matching(VAR_RE, k, "variable name", "a jinja2 identifier: letters, digits, _")
        return v

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str | None:
        return None if v is None else matching(URL_RE, v, "mirror", "an http(s):// or file:// URL")

    @field_validator("disk_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        try:
            return parse_size(v, "disk_size")
        except Exception as e:
            raise ValueError(f"bad disk_size {v!r}: use e.g. 2G or 512M") from e

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[Format]) -> list[Format]:
        if not v:
            raise ValueError("formats is empty: list at least one of " + ", ".join(Format))
        return list(dict.fromkeys(v))

    @field_validator("base")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        return None if v is None else matching(ID_RE, v, "base image id", "12 hex digits, see `fg-image list`")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.os.family.is_debian is False and self.repositories and any(r.suite for r in self.repositories):
            raise ValueError("repositories: suite applies to Debian/Ubuntu only")
        return self

    def all_packages(self) -> list[str]:
        """The recipe's packages plus those its options need (sudo for sudo users)."""
        extra = ["sudo"] if any(u.sudo for u in self.users) and "sudo" not in self.packages else []
        return list(dict.fromkeys([*self.packages, *extra]))

    def image_name(self) -> str:
        return self.upload.name or self.name


BUILD_REVISION = 9
"""Bump when a change to Rain alters what an identical recipe produces (2: images are generalized; 3: raw/qcow2 disks
boot by GRUB for BIOS and UEFI; 4: disks without cloud-init grow their root at first boot; 5: tar.zst in package
order, times clamped, independent frames; 6: the manifest gives each package's license and archive, for the SBOM
and lock files, and dpkg's and apt's logs are emptied; 7: squashfs and disks are the same bytes for the same
tree: identifiers from the recipe hash, times from the source date epoch; 8: 7's disks had every ESP's volume id
1234-ABCD, which their GRUB does not look for, and did not boot; 9: the epoch is the base system's packages' newest
date, not the archive's, and package scripts see it as SOURCE_DATE_EPOCH: the initramfs is the same bytes too)."""


RHEL_REVISION = 1
"""As BUILD_REVISION, for a change to what RHEL-family recipes alone produce, so that Debian's cached results stay
(1: dnf's logs are emptied, its history keeps neither this host's paths nor times past the epoch and is rebuilt
from its rows, rpm's and dnf's databases are packed without a write-ahead log, and rpm records the epoch as every
package's install time, on a builder VM too). It is part of a RHEL base's cache key too."""


def recipe_hash(recipe: Recipe, mirror: str, inputs: dict[str, bytes], epoch: int | None = None,
                lock: str | None = None, reproducible: bool = True) -> str:
    """What the result depends on: the recipe (not its upload options), the mirror, input files, the
    build revision, a SOURCE_DATE_EPOCH given to the build, the digest of its lock file and whether the
    build is reproducible (the `reproducible` setting)."""
    data = recipe.model_dump(mode="json", exclude={"upload", "vars", "builder"})  # where, not what
    key: dict[str, object] = {"recipe": data, "mirror": mirror, "build": BUILD_REVISION}
    if not recipe.os.family.is_debian:
        key["rhel"] = RHEL_REVISION
    if epoch is not None:
        key["source_date_epoch"] = epoch
    if lock is not None:
        key["lock"] = lock
    if not reproducible:
        key["reproducible"] = False
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for name in sorted(inputs):
        h.update(name.encode() + b"\0" + hashlib.sha256(inputs[name]).digest())
    return h.hexdigest()
