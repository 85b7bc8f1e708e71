"""The qemu builder image's recipe ships in the wheel: an installed Rain (no source checkout) finds and validates it.

The wheel is built from a copy of the sources (`pip wheel`, as a packager would),
installed into a fresh venv that borrows this venv's dependencies (no network),
and run from a directory far from the checkout with no PYTHONPATH: the only Rain
it can import is the installed one. Nothing is built and no VM starts.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3]
SHIPPED = ["rain/generate/builders/data/debian-builder.yaml", "rain/generate/builders/data/chroot.sh",
           "rain/generate/builders/data/files/builder-init", "rain/generate/builders/data/files/sshd_config"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(wheel, venv, environment): Rain's wheel installed into a venv of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copytree(SOURCE / "rain", src / "rain", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SOURCE / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp / "dist")], cwd=tmp)
    wheel = next((tmp / "dist").glob("rain_images-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    # this venv's dependencies, after the new venv's own site-packages (so its rain wins)
    (purelib / "zz-borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
         "--no-index", "-q", str(wheel)], cwd=tmp)
    home = tmp / "elsewhere"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
           "RAIN_DATA_DIR": str(home / "data"), "RAIN_CONFIG": str(home / "none.toml")}
    return wheel, venv, env


def test_the_wheel_carries_the_builder_recipe_its_files_and_the_chroot_script(installed) -> None:  # type: ignore[no-untyped-def]
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names
    assert not any(n.startswith("recipes/") for n in names)


def test_the_installed_rain_finds_its_builder_recipe_inside_itself(installed) -> None:  # type: ignore[no-untyped-def]
    _, venv, env = installed
    home = Path(env["HOME"])
    out = run([str(venv / "bin" / "python"), "-c",
               "import rain; from rain.generate.builders.qemu import builder_recipe; "
               "from rain.generate.loader import load_recipe; r = builder_recipe(); "
               "loaded = load_recipe(r); print(rain.__file__); print(r); print(loaded.recipe.name)"], home, env)
    module, recipe, name = out.split()
    assert module.startswith(str(venv)) and recipe.startswith(str(venv)), "the installed Rain, not the checkout"
    assert name == "rain-builder-debian"


def test_the_installed_fg_image_dry_runs_the_builder_recipe_without_building(installed) -> None:  # type: ignore[no-untyped-def]
    _, venv, env = installed
    home = Path(env["HOME"])
    assert "--rebuild" in run([str(venv / "bin" / "fg-image"), "builder", "image", "--help"], home, env)
    recipe = run([str(venv / "bin" / "python"), "-c",
                  "from rain.generate.builders.qemu import builder_recipe; print(builder_recipe())"], home, env)
    (home / "batch.yaml").write_text(f"recipes: [{recipe.strip()}]\n")
    out = run([str(venv / "bin" / "fg-image"), "batch", "--dry-run", "--json", str(home / "batch.yaml")], home, env)
    assert '"would build"' in out and "rain-builder-debian" in out
    assert not (home / "data").exists() or not any((home / "data").rglob("*.tar.zst")), "a dry run builds nothing"
