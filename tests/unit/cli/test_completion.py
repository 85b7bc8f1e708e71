"""Tab completion: the shell asks the real `fg-image` (as the script `--show-completion` prints does) and
gets commands and the valid values of a flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FG_IMAGE = Path(sys.executable).parent / "fg-image"


def complete(tmp_path: Path, shell: str, words: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_DATA_DIR": str(tmp_path / "data"), "RAIN_CONFIG": str(tmp_path / "absent.toml"),
                "_FG_IMAGE_COMPLETE": f"complete_{shell}", "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - 1), "_TYPER_COMPLETE_ARGS": words})
    r = subprocess.run([str(FG_IMAGE)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_a_command(tmp_path: Path) -> None:
    assert complete(tmp_path, "bash", "fg-image gen") == ["generate"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_offers_the_valid_targets(tmp_path: Path, shell: str) -> None:
    offered = " ".join(complete(tmp_path, shell, "fg-image register 0123456789ab --target o"))
    assert "opennebula" in offered and "openstack" in offered and "hpc" not in offered


def test_completion_offers_the_cache_kinds(tmp_path: Path) -> None:
    assert complete(tmp_path, "bash", "fg-image cache prune --kind b") == ["bases"]
