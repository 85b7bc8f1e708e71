"""`fg_offline`: the real `fg-image` console script with no repository, for what it does before any command
runs (parsing, usage errors, refusals, help, completion). The `fg` fixture in tests/conftest.py has a database."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import FG_IMAGE


@pytest.fixture
def fg_offline(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """fg_offline(*args, env={...}) → CompletedProcess; stdin is not a terminal, help is 200 columns wide."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    base.update({"RAIN_DATA_DIR": str(tmp_path / "data"), "RAIN_CONFIG": str(tmp_path / "absent.toml"),
                 "COLUMNS": "200"})

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FG_IMAGE), *args], capture_output=True, text=True, env={**base, **(env or {})},
                              stdin=subprocess.DEVNULL, timeout=60)

    return run
