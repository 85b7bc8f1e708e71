"""`--yes/-y` means "do not ask" on every command that asks; without a terminal to ask on, they refuse in one line.

These run the real `fg-image` with stdin not a terminal, as a script would.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("yes", ["--yes", "-y"])
def test_cache_prune_with_yes_removes_without_asking(fg_offline, yes: str) -> None:
    r = fg_offline("cache", "prune", yes)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("removed 0 entries")


@pytest.mark.parametrize("args, refusal", [
    (["cache", "prune", "--kind", "results"], "error: not removing results without a yes"),
    (["deregister", "0123456789ab", "--target", "hpc"],
     "error: not deleting image 0123456789ab from hpc (every site) without a yes"),
])
def test_a_command_that_asks_refuses_in_a_script_without_yes_and_says_how(
        fg_offline, args: list[str], refusal: str) -> None:
    r = fg_offline(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith(refusal) and "pass --yes" in r.stderr


def test_force_no_longer_means_do_not_ask_on_cache_prune(fg_offline) -> None:
    r = fg_offline("cache", "prune", "--force")
    assert r.returncode == 2
    assert r.stderr == "error: No such option: --force — see `fg-image cache prune --help`\n"


def test_every_yes_and_json_flag_has_the_same_help(fg_offline) -> None:
    helps = {cmd: fg_offline(*cmd.split(), "--help").stdout for cmd in ("remove", "deregister", "cache prune")}
    assert all("do not ask for confirmation" in text for text in helps.values()), helps
    jsons = {cmd: fg_offline(*cmd.split(), "--help").stdout
             for cmd in ("generate", "list", "show", "vet", "users list", "config show", "repo status", "cache list")}
    assert all("print JSON for scripts instead of text" in text for text in jsons.values()), jsons
