"""The generated tables in docs/ (settings, exit codes, builders file, targets file) match the code,
and the check names the stale page and the command that fixes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rain.config import FIELDS, Field
from rain.errors import ExitCode
from rain.generate.builders.base import BuilderName
from rain.reference import COMMAND, REGIONS, ROOT, Region, settings_table, splice, stale, stale_message, write
from rain.register.targets.base import TargetName


def test_every_generated_page_matches_the_code() -> None:
    documents = stale()
    assert documents == [], stale_message(documents)


def test_a_new_setting_leaves_the_operator_guide_stale_and_says_how_to_regenerate() -> None:
    shiny = Field("shiny", lambda: 3, "how shiny the images are", convert=int)
    regions = {**REGIONS, "settings": Region("docs/operator.md", lambda: settings_table((*FIELDS, shiny)))}

    documents = stale(regions=regions)

    assert documents == ["docs/operator.md"]
    message = stale_message(documents)
    assert "docs/operator.md" in message and COMMAND in message


def test_the_operator_guide_lists_every_setting_with_its_environment_variable() -> None:
    text = (ROOT / "docs/operator.md").read_text()
    for f in FIELDS:
        assert f"| `{f.name}` | `{f.env}` |" in text, f.name


def test_the_operator_guide_lists_every_exit_code() -> None:
    text = (ROOT / "docs/operator.md").read_text()
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}` |" in text, code.name


def test_the_targets_guide_has_a_settings_table_for_every_target() -> None:
    text = (ROOT / "docs/targets.md").read_text()
    for name in TargetName:
        assert f"### `{name.value}`\n\n| key | type | default | what it does |" in text, name.value


def test_writing_restores_a_stale_table_and_keeps_the_prose_around_it(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs/builders.md"
    fresh = page.read_text()
    page.write_text(splice(fresh, "builders", "| an | old | table |") + "\nA note added by hand.\n")

    assert stale(tmp_path) == ["docs/builders.md"]
    assert write(tmp_path) == ["docs/builders.md"]
    assert page.read_text() == fresh + "\nA note added by hand.\n"
    assert stale(tmp_path) == []


def test_a_page_without_its_markers_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="generated: settings"):
        splice("# A page\n\nNo markers here.\n", "settings", "| a | table |")


def test_the_builders_guide_has_a_settings_table_for_every_vm_builder() -> None:
    text = (ROOT / "docs/builders.md").read_text()
    for name in (b for b in BuilderName if b.is_vm):
        assert f"### `{name.value}`\n\n| key | type | default | what it does |" in text, name.value
