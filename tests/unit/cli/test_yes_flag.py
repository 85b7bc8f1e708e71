"""`--yes/-y` means "do not ask" on every command that asks; without a terminal to ask on, they refuse in one line.

These run the real `fg-image` with stdin not a terminal, as a script would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FG_IMAGE = Path(sys.executable).parent / "fg-image"


def fg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_DATA_DIR": str(tmp_path / "data"), "RAIN_CONFIG": str(tmp_path / "absent.toml"),
                "COLUMNS": "200"})  # help on one line per option
    return subprocess.run([str(FG_IMAGE), *args], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("yes", ["--yes", "-y"])
def test_cache_prune_with_yes_removes_without_asking(tmp_path: Path, yes: str) -> None:
    r = fg(tmp_path, "cache", "prune", yes)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("removed 0 entries")


@pytest.mark.parametrize("args, refusal", [
    (["cache", "prune", "--kind", "results"], "error: not removing results without a yes"),
    (["deregister", "0123456789ab", "--target", "hpc"],
     "error: not deleting image 0123456789ab from hpc (every site) without a yes"),
])
def test_a_command_that_asks_refuses_in_a_script_without_yes_and_says_how(
        tmp_path: Path, args: list[str], refusal: str) -> None:
    r = fg(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith(refusal) and "pass --yes" in r.stderr


def test_force_no_longer_means_do_not_ask_on_cache_prune(tmp_path: Path) -> None:
    r = fg(tmp_path, "cache", "prune", "--force")
    assert r.returncode == 2
    assert r.stderr == "error: No such option: --force — see `fg-image cache prune --help`\n"


def test_every_yes_and_json_flag_has_the_same_help(tmp_path: Path) -> None:
    helps = {cmd: fg(tmp_path, *cmd.split(), "--help").stdout for cmd in ("remove", "deregister", "cache prune")}
    assert all("do not ask for confirmation" in text for text in helps.values()), helps
    jsons = {cmd: fg(tmp_path, *cmd.split(), "--help").stdout
             for cmd in ("generate", "list", "show", "vet", "users list", "config show", "repo status", "cache list")}
    assert all("print JSON for scripts instead of text" in text for text in jsons.values()), jsons
