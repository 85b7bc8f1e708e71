"""Tab completion: the shell asks the real `fg-image` (as the script `--show-completion` prints does) and
gets commands and the valid values of a flag."""

from __future__ import annotations

import pytest


def complete(fg_offline, shell: str, words: str) -> list[str]:
    r = fg_offline(env={"_FG_IMAGE_COMPLETE": f"complete_{shell}", "COMP_WORDS": words,
                        "COMP_CWORD": str(len(words.split()) - 1), "_TYPER_COMPLETE_ARGS": words})
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_a_command(fg_offline) -> None:
    assert complete(fg_offline, "bash", "fg-image gen") == ["generate"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_offers_the_valid_targets(fg_offline, shell: str) -> None:
    offered = " ".join(complete(fg_offline, shell, "fg-image register 0123456789ab --target o"))
    assert "opennebula" in offered and "openstack" in offered and "hpc" not in offered


def test_completion_offers_the_cache_kinds(fg_offline) -> None:
    assert complete(fg_offline, "bash", "fg-image cache prune --kind b") == ["bases"]
