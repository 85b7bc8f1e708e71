"""The targets file: per target, named sites with validated settings.

    ec2:
      default:
        region: us-east-1
        access_key_id_env: AWS_ACCESS_KEY_ID
        secret_access_key_env: AWS_SECRET_ACCESS_KEY
    openstack:
      lab:
        auth_url: https://keystone.example.org:5000/v3
        username: rain
        password_env: OS_PASSWORD
        project_name: images

Credentials appear only as references (`*_env`, `*_file`), never as values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rain.config import Settings, read_yaml_mapping
from rain.errors import ConfigError
from rain.register.targets.base import SiteSettings, Target, TargetName, target_name


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"no targets file at {path}",
                          hint="write one (see docs/targets.md) or point RAIN_TARGETS_FILE at it")
    return read_yaml_mapping(path, "targets file", "docs/targets.md", "ec2: {default: {region: us-east-1}}")


def site_names(settings: Settings, target: TargetName) -> list[str]:
    return sorted((_read(settings.targets_path).get(target.value) or {}).keys())


def open_target(settings: Settings, target: str, site: str | None = None) -> tuple[Target, str]:
    """Validate the site's settings and build its target provider (no network yet)."""
    name = target_name(target)
    model, site = _site_settings(settings, name, site)
    return name.load()(model, site, settings), site


def open_offline(settings: Settings, target: str, site: str | None = None) -> tuple[Target, str]:
    """A provider for adapt, pack and boot_test only (`register --output`): it reads no secrets, and
    without `site` it needs no targets file at all, because the image is for a site Rain cannot reach.

    Without a site, the site settings are the defaults; the fields only publishing needs are None."""
    name = target_name(target)
    cls = name.load()
    if site is not None:
        model, site = _site_settings(settings, name, site)
    else:
        model = cls.site_model.model_construct(**{k: None for k, f in cls.site_model.model_fields.items()
                                                  if f.is_required()})
        site = ""
    return cls(model, site, settings, offline=True), site


def _site_settings(settings: Settings, name: TargetName, site: str | None) -> tuple[SiteSettings, str]:
    """The named (or only, or default) site of the target, validated."""
    path = settings.targets_path
    data = _read(path)
    for key in data:
        target_name(str(key))  # unknown top-level names are errors, listing the valid ones
    sites = data.get(name.value) or {}
    if not isinstance(sites, dict) or not sites:
        raise ConfigError(f"no {name.value} sites in {path}",
                          hint=f"add '{name.value}: {{SITE: {{...}}}}' to the targets file (see docs/targets.md)")
    if site is None:
        site = "default" if "default" in sites else (next(iter(sites)) if len(sites) == 1 else None)
        if site is None:
            raise ConfigError(f"several {name.value} sites in {path}: choose one with --site",
                              hint="sites: " + ", ".join(sorted(sites)))
    if site not in sites:
        raise ConfigError(f"no {name.value} site {site!r} in {path}",
                          hint="sites: " + ", ".join(sorted(sites)))
    cls = name.load()
    try:
        model = cls.site_model.model_validate(sites[site] or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(site)"
        raise ConfigError(f"{name.value} site {site!r} in {path}: {where}: {err['msg']}",
                          hint="valid keys: " + ", ".join(cls.site_model.model_fields)) from e
    return model, site
