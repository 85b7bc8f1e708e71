"""Every recipe and batch file in recipes/ parses and passes the dry-run (prepare: no side effects)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import RECIPES

from rain.arch import Architecture
from rain.config import load_settings
from rain.errors import RecipeError
from rain.generate.batch import load_batch, run_batch
from rain.generate.build import BuildOptions, prepare
from rain.generate.builders.qemu import builder_recipe
from rain.generate.loader import load_recipe
from rain.progress import Reporter

RECIPE_FILES = sorted([*(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("batch-")),
                       builder_recipe()])  # the qemu builder image's recipe (package data) too
BATCH_FILES = sorted(RECIPES.glob("batch-*.yaml"))


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_settings(environ={"RAIN_DATA_DIR": str(tmp_path / "data"),
                                  "RAIN_CONFIG": str(tmp_path / "none.toml")})


def test_the_recipes_the_issue_asks_for_are_there() -> None:
    names = {p.name for p in RECIPE_FILES}
    assert {"debian-bookworm-minimal.yaml", "debian-bookworm-kernel.yaml", "hpc-compute.yaml",
            "debian-trixie.yaml", "rocky9.yaml", "debian-bookworm-cloud.yaml"} <= names
    assert BATCH_FILES, "a batch file with a matrix"


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.name)
def test_recipe_parses_and_dry_runs(path: Path, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded = load_recipe(path)
    plan = prepare(loaded, settings, BuildOptions(upload=False))
    assert len(plan.recipe_hash) == 64
    assert not (tmp_path / "data").exists(), "a dry run must not write anything"


def test_kernel_recipes_include_a_kernel() -> None:
    for name in ("debian-bookworm-kernel.yaml", "hpc-compute.yaml"):
        assert "linux-image-amd64" in load_recipe(RECIPES / name).recipe.packages


def test_the_cloud_recipe_brings_what_a_cloud_boot_needs() -> None:
    """A kernel, cloud-init for the cloud's metadata, growpart and resize2fs to fill the disk, sshd to log in."""
    packages = set(load_recipe(RECIPES / "debian-bookworm-cloud.yaml").recipe.packages)
    assert {"linux-image-cloud-amd64", "cloud-init", "cloud-guest-utils", "e2fsprogs", "openssh-server"} <= packages


@pytest.mark.parametrize("path", BATCH_FILES, ids=lambda p: p.name)
def test_batch_file_expands_and_dry_runs(path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    items = load_batch(path)
    names = [i.loaded.recipe.name for i in items]
    assert len(names) == len(set(names)) >= 4
    outcomes = run_batch(items, settings, BuildOptions(upload=False), Reporter(), dry_run=True)
    assert {o.status for o in outcomes} == {"would build"}


def test_matrix_sets_fields_and_variables(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("name: x-{{ rel }}\nvars: {rel: bookworm}\n"
                                     "os: {family: debian, release: '{{ rel }}', arch: amd64}\n")
    (tmp_path / "b.yaml").write_text("matrix:\n  - recipe: r.yaml\n    axes:\n      vars.rel: [bookworm, trixie]\n"
                                     "      os.arch: [amd64]\n")
    items = load_batch(tmp_path / "b.yaml")
    assert [(i.loaded.recipe.name, i.loaded.recipe.os.release) for i in items] == \
        [("x-bookworm", "bookworm"), ("x-trixie", "trixie")]
    assert items[1].label == "r.yaml[rel=trixie,arch=amd64]"


def test_batch_refuses_two_entries_building_the_same_image(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("name: same\nos: {family: debian, release: '{{ rel }}'}\nvars: {rel: bookworm}\n")
    (tmp_path / "b.yaml").write_text("matrix:\n  - recipe: r.yaml\n    axes: {os.arch: [amd64, x86_64]}\n")
    with pytest.raises(RecipeError, match="same image"):
        load_batch(tmp_path / "b.yaml")


def test_a_bad_entry_fails_the_whole_batch_before_any_build(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text("name: ok\nos: {family: debian, release: bookworm}\n")
    (tmp_path / "bad.yaml").write_text("name: bad\nos: {family: debian, release: bookworm}\npackages: ['a;b']\n")
    (tmp_path / "b.yaml").write_text("recipes: [ok.yaml, bad.yaml]\n")
    with pytest.raises(RecipeError, match=r"batch entry bad.yaml: .*bad.yaml:3"):
        load_batch(tmp_path / "b.yaml")


def test_a_recipe_for_another_architecture_is_refused_naming_the_hosts(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    host = Architecture.native()
    other = next(a for a in Architecture if a is not host)
    (tmp_path / "r.yaml").write_text(f"name: x\nos: {{family: debian, release: bookworm, arch: {other.rpm}}}\n")
    with pytest.raises(RecipeError, match=f"os.arch: {other.deb} cannot be built on this {host.value} host") as e:
        prepare(load_recipe(tmp_path / "r.yaml"), settings, BuildOptions(upload=False))
    assert e.value.hint == f"use arch {host.deb}"


def test_a_recipe_may_name_the_hosts_architecture_either_way(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    host = Architecture.native()
    for name in (host.deb, host.rpm):
        (tmp_path / "r.yaml").write_text(f"name: x\nos: {{family: debian, release: bookworm, arch: {name}}}\n")
        assert len(prepare(load_recipe(tmp_path / "r.yaml"), settings, BuildOptions(upload=False)).recipe_hash) == 64
