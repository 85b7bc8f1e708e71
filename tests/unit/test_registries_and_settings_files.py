"""The plugin tables (targets, builders, bootstrappers) and the one settings-file loader.

Every name a user can type loads the class that carries that name, nothing is
imported before it is asked for, and the targets file and the builders file
report a bad key the same way: one line naming the file, the key path and what
is wrong, with the valid keys and the docs in the hint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rain.config import Settings, load_settings
from rain.errors import ConfigError
from rain.generate.builders.base import BuilderName, get_builder, get_provider
from rain.generate.builders.qemu import QemuSettings
from rain.generate.builders.settings import provider_settings
from rain.generate.recipe import OsFamily
from rain.register.targets.base import SiteSettings, TargetName
from rain.register.targets.sites import open_offline, open_target


def settings_with(tmp_path: Path, targets: object = None, builders: object = None) -> Settings:
    for name, data in (("targets.yaml", targets), ("builders.yaml", builders)):
        if data is not None:
            (tmp_path / name).write_text(yaml.safe_dump(data))
    return load_settings(environ={"RAIN_CONFIG": str(tmp_path / "none.toml"), "RAIN_DATA_DIR": str(tmp_path),
                                  "RAIN_TARGETS_FILE": str(tmp_path / "targets.yaml"),
                                  "RAIN_BUILDERS_FILE": str(tmp_path / "builders.yaml")})


def test_every_target_name_loads_the_target_of_that_name_with_its_site_model() -> None:
    for name in TargetName:
        cls = name.load()
        assert cls.name is name
        assert issubclass(cls.site_model, SiteSettings)


def test_every_builder_name_loads_a_local_builder_or_a_provider_of_that_name(tmp_path: Path) -> None:
    assert get_builder("local").name == "local" and not BuilderName.LOCAL.is_vm
    for name in BuilderName:
        if name.is_vm:
            assert getattr(name.provider(), "name", None) == name.value


def test_each_os_family_has_the_bootstrapper_of_its_package_manager() -> None:
    assert {f.value: f.bootstrapper().__name__ for f in OsFamily} == {
        "debian": "DebianBootstrapper", "ubuntu": "DebianBootstrapper", "rocky": "RhelBootstrapper",
        "alma": "RhelBootstrapper", "centos": "RhelBootstrapper", "fedora": "RhelBootstrapper"}


def test_no_target_builder_or_bootstrapper_is_imported_until_asked_for() -> None:
    code = ("import json, sys, rain.register.targets.base, rain.generate.builders.base, rain.generate.recipe\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('rain.register.targets.', "
            "'rain.generate.builders.', 'rain.generate.bootstrap.')) or m in ('boto3', 'novaclient'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}).stdout
    assert json.loads(out) == ["rain.generate.builders.base", "rain.register.targets.base"]


def test_a_bad_key_is_one_line_naming_the_file_the_key_path_and_the_docs_in_both_files(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, targets={"hpc": {"lab": {"provision_dir": "/p", "http_url": "h", "colour": 1}}},
                             builders={"qemu": {"memroy": 4096}})
    with pytest.raises(ConfigError) as t:
        open_target(settings, "hpc")
    with pytest.raises(ConfigError) as b:
        provider_settings(settings, "qemu", QemuSettings)
    assert t.value.message.startswith(f"targets file {tmp_path / 'targets.yaml'}: hpc.lab.colour: ")
    assert b.value.message.startswith(f"builders file {tmp_path / 'builders.yaml'}: qemu.memroy: ")
    for e, doc in ((t, "docs/targets.md"), (b, "docs/builders.md")):
        assert "\n" not in e.value.message and "valid keys:" in e.value.hint and doc in e.value.hint


def test_a_bad_value_is_named_with_what_was_given_and_the_docs_not_the_key_list(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, targets={}, builders={"qemu": {"memory": "lots"}})
    with pytest.raises(ConfigError) as b:
        provider_settings(settings, "qemu", QemuSettings)
    assert b.value.message.startswith(f"builders file {tmp_path / 'builders.yaml'}: qemu.memory: 'lots': ")
    assert b.value.hint == "see docs/builders.md"


def test_a_section_that_is_not_a_mapping_is_named_with_its_path(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, targets={"hpc": {"lab": ["x"]}}, builders={"qemu": ["x"]})
    with pytest.raises(ConfigError, match=r"hpc\.lab: must be a mapping"):
        open_target(settings, "hpc")
    with pytest.raises(ConfigError, match=r"builders\.yaml: qemu: must be a mapping"):
        provider_settings(settings, "qemu", QemuSettings)


def test_without_a_builders_file_qemu_gets_defaults_and_a_cloud_says_to_write_one(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert provider_settings(settings, "qemu", QemuSettings) == QemuSettings()
    with pytest.raises(ConfigError) as e:
        get_provider("opennebula", settings)
    assert "opennebula.endpoint" in e.value.message and "there is no builders file" in e.value.message
    assert "docs/builders.md" in e.value.hint


def test_a_missing_site_or_target_section_names_the_target_and_lists_the_sites(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, targets={"hpc": {"lab": {"provision_dir": "/p", "http_url": "h"}}})
    with pytest.raises(ConfigError) as e:
        open_target(settings, "hpc", "moon")
    assert "targets.yaml: hpc: no site 'moon'" in e.value.message and e.value.hint == "sites: lab"
    with pytest.raises(ConfigError) as e:
        open_target(settings, "ec2")
    assert "targets.yaml: ec2: no sites" in e.value.message and "docs/targets.md" in e.value.hint


def test_an_offline_target_needs_no_targets_file(tmp_path: Path) -> None:
    target, site = open_offline(settings_with(tmp_path), "openstack")
    assert site == "" and target.name is TargetName.OPENSTACK
