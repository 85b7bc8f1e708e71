"""The Target interface, the lazy registry of target providers, and shared site-settings pieces."""

from __future__ import annotations

import importlib
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, model_validator

from rain.config import env_value
from rain.errors import ConfigError, InvalidInput
from rain.register.models import Label, Packed, VetPolicy


class TargetName(StrEnum):
    HPC = "hpc"
    OPENNEBULA = "opennebula"
    OPENSTACK = "openstack"
    EC2 = "ec2"


PROVIDERS: dict[TargetName, str] = {
    TargetName.HPC: "rain.register.targets.hpc:HpcTarget",
    TargetName.OPENNEBULA: "rain.register.targets.opennebula:OpenNebulaTarget",
    TargetName.OPENSTACK: "rain.register.targets.openstack:OpenStackTarget",
    TargetName.EC2: "rain.register.targets.ec2:Ec2Target",
}


class Target(Protocol):
    """One infrastructure an image can be registered on.

    adapt and pack work on local files only; publish is the one step that talks
    to the site, and delete undoes it (also for a partial publish)."""

    name: ClassVar[TargetName]
    vet_policy: ClassVar[VetPolicy]
    derived_format: ClassVar[str]
    """Format of the derived image stored back in the repository (the packed primary file)."""

    def adapt(self, root: Path) -> list[str]:
        """Change the unpacked copy at `root` for this target; return what was changed, one line each."""

    def pack(self, root: Path, out: Path) -> Packed:
        """Write the target's files for `root` into the directory `out`."""

    def publish(self, packed: Packed, label: Label) -> str:
        """Send the packed files to the site; return the remote id. Deletes what it made if it fails."""

    def delete(self, remote_id: str) -> None:
        """Remove a published image from the site (missing counts as removed)."""


@runtime_checkable
class BootTestable(Protocol):
    """Targets whose packed files can be booted on this host to prove they work."""

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None: ...


class SiteSettings(BaseModel):
    """Base for each target's validated site settings (extra keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def secret(self, field: str) -> str:
        """The credential named by `<field>_env` or `<field>_file`; never stored in the targets file."""
        var, path = getattr(self, f"{field}_env", None), getattr(self, f"{field}_file", None)
        if var:
            value = env_value(var)
            if not value:
                raise ConfigError(f"{field} for this site comes from ${var}, which is not set",
                                  hint=f"export {var}=... before registering")
            return value
        if path:
            try:
                return Path(path).expanduser().read_text().strip()
            except OSError as e:
                raise ConfigError(f"cannot read {field} from {path}: {e.strerror}",
                                  hint="check the path in the targets file and its permissions") from e
        raise ConfigError(f"no {field} configured for this site",
                          hint=f"set {field}_env (an environment variable name) or {field}_file in the targets file")


def one_secret(*fields: str) -> Any:
    """A model validator: each credential is given by exactly one of `<f>_env` / `<f>_file`."""

    @model_validator(mode="after")
    def check(self: BaseModel) -> BaseModel:
        for f in fields:
            if getattr(self, f"{f}_env", None) and getattr(self, f"{f}_file", None):
                raise ValueError(f"give {f}_env or {f}_file, not both")
        return self

    return check


def target_name(text: str) -> TargetName:
    try:
        return TargetName(text)
    except ValueError:
        raise InvalidInput(f"unknown target {text!r}",
                           hint="valid targets: " + ", ".join(t.value for t in TargetName)) from None


def target_class(name: TargetName) -> Any:
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
