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

from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from rain.config import Settings
from rain.settings_file import SettingsFile

M = TypeVar("M", bound=BaseModel)


class ProviderSettings(BaseModel):
    """Base for each provider's settings: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: int = 2
    """At most this many builder machines of this provider at once."""
    boot_timeout: float = 600.0
    """Seconds from launch until the machine's sshd must answer."""


def builders_file(settings: Settings) -> SettingsFile:
    """The builders file (optional: without it every provider gets its defaults)."""
    return SettingsFile(settings.builders_path, "builders file", "docs/builders.md", "qemu: {memory: 2048}")


def provider_settings(settings: Settings, name: str, model: type[M]) -> M:
    """The validated section `name` of the builders file (defaults when it is absent)."""
    return builders_file(settings).section((name,), model)
