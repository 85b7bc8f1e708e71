"""The builders file: per provider, validated settings (YAML, like the targets file).

    qemu:                 # all optional
      memory: 2048        # MiB
      cpus: 2
      accel: auto         # auto (KVM if a quick probe boots, else TCG) | kvm | tcg
    opennebula:
      endpoint: http://one.example.org:2633/RPC2
      username: rain
      password_env: ONE_PASSWORD
      template_id: 12
    openstack:
      auth_url: https://keystone.example.org:5000/v3
      username: rain
      password_env: OS_PASSWORD
      project_name: builds
      image: rain-builder
      flavor: m1.medium
      network: build-net

Credentials appear only as references (`*_env`, `*_file`), never as values.
A provider with no section gets its defaults (qemu needs none; the clouds fail
with a one-line error naming the missing keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rain.config import Settings, read_yaml_mapping
from rain.errors import ConfigError


class ProviderSettings(BaseModel):
    """Base for each provider's settings: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: int = 2
    """At most this many builder machines of this provider at once."""
    boot_timeout: float = 600.0
    """Seconds from launch until the machine's sshd must answer."""


def read_builders_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return read_yaml_mapping(path, "builders file", "docs/builders.md", "qemu: {memory: 2048}")


def provider_settings(settings: Settings, name: str, model: type[BaseModel]) -> Any:
    """The validated section `name` of the builders file (defaults when it is absent)."""
    path = settings.builders_path
    data = read_builders_file(path)
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"builders file {path}: {name} must be a mapping of settings",
                          hint="valid keys: " + ", ".join(model.model_fields))
    try:
        return model.model_validate(section)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(section)"
        missing = "" if path.is_file() else " (no builders file: write one, see docs/builders.md)"
        raise ConfigError(f"builders file {path}: {name}.{where}: {err['msg']}{missing}",
                          hint="valid keys: " + ", ".join(model.model_fields)) from e
