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

from rain.config import Settings
from rain.register.targets.base import SiteSettings, Target, TargetName, target_name
from rain.settings_file import SettingsFile


def targets_file(settings: Settings) -> SettingsFile:
    """The targets file (required: registering needs at least one site)."""
    return SettingsFile(settings.targets_path, "targets file", "docs/targets.md",
                        "ec2: {default: {region: us-east-1}}",
                        missing_hint="write one (see docs/targets.md) or point RAIN_TARGETS_FILE at it")


def site_names(settings: Settings, target: TargetName) -> list[str]:
    return sorted((targets_file(settings).data().get(target.value) or {}).keys())


def open_target(settings: Settings, target: str, site: str | None = None) -> tuple[Target, str]:
    """Validate the site's settings and build its target (no network yet)."""
    cls = target_name(target).load()
    model, site = _site_settings(settings, cls, site)
    return cls(model, site, settings), site


def open_offline(settings: Settings, target: str, site: str | None = None) -> tuple[Target, str]:
    """A target for adapt, pack and boot_test only (`register --output`): it reads no secrets, and
    without `site` it needs no targets file at all, because the image is for a site Rain cannot reach.

    Without a site, the site settings are the defaults; the fields only publishing needs are None."""
    cls = target_name(target).load()
    if site is not None:
        model, site = _site_settings(settings, cls, site)
    else:
        model = cls.site_model.model_construct(**{k: None for k, f in cls.site_model.model_fields.items()
                                                  if f.is_required()})
        site = ""
    return cls(model, site, settings, offline=True), site


def _site_settings(settings: Settings, cls: type[Target], site: str | None) -> tuple[SiteSettings, str]:
    """The named (or only, or default) site of the target, validated."""
    file = targets_file(settings)
    data = file.data()
    for key in data:
        target_name(str(key))  # unknown top-level names are errors, listing the valid ones
    name = cls.name.value
    sites = data.get(name) or {}
    if not isinstance(sites, dict) or not sites:
        raise file.error(name, "no sites", f"add '{name}: {{SITE: {{...}}}}' to it (see {file.doc})")
    if site is None:
        site = "default" if "default" in sites else (next(iter(sites)) if len(sites) == 1 else None)
        if site is None:
            raise file.error(name, "several sites: choose one with --site", "sites: " + ", ".join(sorted(sites)))
    if site not in sites:
        raise file.error(name, f"no site {site!r}", "sites: " + ", ".join(sorted(sites)))
    return file.validate((name, site), sites[site] or {}, cls.site_model), site
