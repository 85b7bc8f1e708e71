"""The qemu builder image's recipe ships in the wheel: an installed Rain (no source checkout) finds and validates it.

The wheel is built from a copy of the sources (`pip wheel`, as a packager would),
installed into a fresh venv that borrows this venv's dependencies (no network),
and run from a directory far from the checkout with no PYTHONPATH: the only Rain
it can import is the installed one (support/wheel.py). Nothing is built and no VM
starts here; tests/e2e/builders/ makes the builder image with the installed Rain.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from support.wheel import Installed, install_wheel, run

SHIPPED = ["rain/generate/builders/data/debian-builder.yaml", "rain/generate/builders/data/chroot.sh",
           "rain/generate/builders/data/files/builder-init", "rain/generate/builders/data/files/sshd_config"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_the_builder_recipe_its_files_and_the_chroot_script(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert set(SHIPPED) <= names
    assert not any(n.startswith("recipes/") for n in names)


def test_the_installed_rain_finds_its_builder_recipe_inside_itself(installed: Installed) -> None:
    out = run([installed.python, "-c",
               "import rain; from rain.generate.builders.qemu import builder_recipe; "
               "from rain.generate.loader import load_recipe; r = builder_recipe(); "
               "loaded = load_recipe(r); print(rain.__file__); print(r); print(loaded.recipe.name)"],
              installed.home, installed.env)
    module, recipe, name = out.split()
    venv = str(installed.venv)
    assert module.startswith(venv) and recipe.startswith(venv), "the installed Rain, not the checkout"
    assert name == "rain-builder-debian"


def test_the_installed_fg_image_dry_runs_the_builder_recipe_without_building(installed: Installed) -> None:
    home, env = installed.home, installed.env
    assert "--rebuild" in run([installed.fg_image, "builder", "image", "--help"], home, env)
    recipe = run([installed.python, "-c",
                  "from rain.generate.builders.qemu import builder_recipe; print(builder_recipe())"], home, env)
    (home / "batch.yaml").write_text(f"recipes: [{recipe.strip()}]\n")
    out = run([installed.fg_image, "batch", "--dry-run", "--json", str(home / "batch.yaml")], home, env)
    assert '"would build"' in out and "rain-builder-debian" in out
    data = Path(env["RAIN_DATA_DIR"])
    assert not data.exists() or not any(data.rglob("*.tar.zst")), "a dry run builds nothing"
