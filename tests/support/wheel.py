"""Rain as a packager ships it: a wheel built from a copy of the sources, installed into a venv of its own.

`pip wheel` runs on a copy of rain/, pyproject.toml and README.md (nothing else of
the checkout); the wheel goes into a fresh venv that borrows this venv's
dependencies through a .pth file placed after its own site-packages (no network,
and its own rain wins). `env` runs it from a directory far from the checkout with
no PYTHONPATH, so the only Rain it can import is the installed one.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path
    """An empty directory outside the checkout: the working directory and HOME."""
    env: dict[str, str]

    @property
    def fg_image(self) -> str:
        return str(self.venv / "bin" / "fg-image")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """argv's stdout; fails the test with both streams when it exits non-zero."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{argv[:3]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def install_wheel(tmp: Path) -> Installed:
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
    (purelib / "zz-borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
         "--no-index", "-q", str(wheel)], cwd=tmp)
    home = tmp / "elsewhere"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
           "RAIN_DATA_DIR": str(home / "data"), "RAIN_CONFIG": str(home / "none.toml"), "NO_COLOR": "1"}
    return Installed(wheel, venv, home, env)
