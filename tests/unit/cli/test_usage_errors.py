"""A misspelt choice on the command line: one line naming the flag, the value and every valid value; exit code 2.

These run the real `fg-image` console script: the line users see is the one
click would otherwise print as a usage box, rendered in rain/cli/usage.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("args, line", [
    (["register", "0123456789ab", "--target", "opnstack"],
     "error: --target 'opnstack' is not one of: hpc, opennebula, openstack, ec2"),
    (["generate", "recipe.yaml", "--builder", "vmware"],
     "error: --builder 'vmware' is not one of: local, qemu, opennebula, openstack"),
    (["generate", "recipe.yaml", "--format", "raw", "--format", "qcow"],
     "error: --format 'qcow' is not one of: tar.zst, raw, qcow2, squashfs"),
    (["batch", "batch.yaml", "--on-error", "pause"], "error: --on-error 'pause' is not one of: remove, keep"),
    (["cache", "prune", "--kind", "everything"],
     "error: --kind 'everything' is not one of: packages, bases, results, chunks"),
    (["deregister", "0123456789ab", "-t", "aws"],
     "error: --target 'aws' is not one of: hpc, opennebula, openstack, ec2"),
    (["vet", "image.img", "--format", "vmdk"],
     "error: --format 'vmdk' is not one of: tar.zst, tar, tar.gz, tar.xz, raw, qcow2, squashfs, dir"),
    (["builder", "check", "vmware"], "error: NAME 'vmware' is not one of: local, qemu, opennebula, openstack"),
])
def test_a_misspelt_choice_is_one_line_listing_the_valid_values_and_exit_code_2(
        fg_offline, args: list[str], line: str) -> None:
    r = fg_offline(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr == line + "\n"
    assert r.stdout == ""


def test_a_misspelt_target_changes_nothing_not_even_the_data_directory(fg_offline, tmp_path: Path) -> None:
    r = fg_offline("vet", "0123456789ab", "--target", "opnstack")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists(), "the value is refused before any command runs"


def test_other_usage_errors_are_one_line_pointing_at_the_commands_help(fg_offline) -> None:
    r = fg_offline("generate", "recipe.yaml", "--bogus")
    assert r.returncode == 2
    assert r.stderr == "error: No such option: --bogus — see `fg-image generate --help`\n"


def test_help_lists_the_valid_values_of_every_choice(fg_offline) -> None:
    text = fg_offline("generate", "--help").stdout + fg_offline("register", "--help").stdout
    for values in ("local|qemu|opennebula|openstack", "tar.zst|raw|qcow2|squashfs", "remove|keep",
                   "hpc|opennebula|openstack|ec2"):
        assert values in text
