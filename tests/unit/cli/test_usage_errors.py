"""A misspelt choice on the command line: one line naming the flag, the value and every valid value; exit code 2.

These run the real `fg-image` console script: the line users see is the one
click would otherwise print as a usage box, rendered in rain/cli/usage.py.
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
    return subprocess.run([str(FG_IMAGE), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args, line", [
    (["register", "0123456789ab", "--target", "opnstack"],
     "error: --target 'opnstack' is not one of: hpc, opennebula, openstack, ec2"),
    (["generate", "recipe.yaml", "--builder", "vmware"],
     "error: --builder 'vmware' is not one of: local, qemu, opennebula, openstack"),
    (["generate", "recipe.yaml", "--format", "raw", "--format", "qcow"],
     "error: --format 'qcow' is not one of: tar.zst, raw, qcow2, squashfs"),
    (["batch", "batch.yaml", "--on-error", "pause"], "error: --on-error 'pause' is not one of: remove, keep"),
    (["cache", "prune", "--kind", "everything"], "error: --kind 'everything' is not one of: packages, bases, results"),
    (["deregister", "0123456789ab", "-t", "aws"],
     "error: --target 'aws' is not one of: hpc, opennebula, openstack, ec2"),
    (["builder", "check", "vmware"], "error: NAME 'vmware' is not one of: local, qemu, opennebula, openstack"),
])
def test_a_misspelt_choice_is_one_line_listing_the_valid_values_and_exit_code_2(
        tmp_path: Path, args: list[str], line: str) -> None:
    r = fg(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr == line + "\n"
    assert r.stdout == ""


def test_a_misspelt_target_changes_nothing_not_even_the_data_directory(tmp_path: Path) -> None:
    r = fg(tmp_path, "vet", "0123456789ab", "--target", "opnstack")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists(), "the value is refused before any command runs"


def test_other_usage_errors_are_one_line_pointing_at_the_commands_help(tmp_path: Path) -> None:
    r = fg(tmp_path, "generate", "recipe.yaml", "--bogus")
    assert r.returncode == 2
    assert r.stderr == "error: No such option: --bogus — see `fg-image generate --help`\n"


def test_help_lists_the_valid_values_of_every_choice(tmp_path: Path) -> None:
    text = fg(tmp_path, "generate", "--help").stdout + fg(tmp_path, "register", "--help").stdout
    for values in ("local|qemu|opennebula|openstack", "tar.zst|raw|qcow2|squashfs", "remove|keep",
                   "hpc|opennebula|openstack|ec2"):
        assert values in text
