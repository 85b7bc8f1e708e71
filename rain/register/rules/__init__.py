"""Vetting rules: each has an id, a severity, a message, a fix hint and a check.

A check takes the image's RootFS and returns RawFindings (paths it objects
to). Rule data (setuid allowlist, credential file names, weak passwords) ships
beside the rules in data/ and is read with importlib.resources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from rain.image.rootfs import RootFS
from rain.register.models import RawFinding, Severity

Check = Callable[[RootFS], list[RawFinding]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: Severity
    message: str
    hint: str
    check: Check | None = None
    """None for findings produced outside the tree walk (the unpacker's archive rules)."""
    group: str = "always"
    """'always', or an optional group a target's policy turns on (kernel, nvme_ena)."""


def data_lines(name: str) -> list[str]:
    """Non-empty, non-comment lines of a rule data file."""
    text = resources.files("rain.register.rules").joinpath("data").joinpath(name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def hits(rule_id: str, paths: list[str]) -> list[RawFinding]:
    return [RawFinding(rule_id, tuple(paths))] if paths else []


@cache
def all_rules() -> dict[str, Rule]:
    from rain.register.rules import accounts, archive, kernel, secrets, ssh, system

    rules: dict[str, Rule] = {}
    for module in (archive, accounts, ssh, secrets, system, kernel):
        for rule in module.RULES:
            if rule.id in rules:
                raise RuntimeError(f"duplicate rule id {rule.id}")
            rules[rule.id] = rule
    return rules


def rule(rule_id: str) -> Rule:
    return all_rules()[rule_id]
