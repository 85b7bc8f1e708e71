"""Vetting: run the rules over an unpacked image and decide under a target's policy."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from rain.errors import VetFailed
from rain.image.rootfs import RootFS
from rain.register.models import (
    NO_TARGET_POLICY,
    Finding,
    RawFinding,
    Severity,
    Verdict,
    VetPolicy,
    VetReport,
)
from rain.register.rules import all_rules

log = logging.getLogger(__name__)
MAX_PATHS = 20


class VetRejected(VetFailed):
    """Vetting failed; the report says which rules and how to fix them."""

    def __init__(self, report: VetReport, hint: str) -> None:
        super().__init__(report.summary(), hint=hint)
        self.report = report


def vet_tree(root: Path, subject: str, policy: VetPolicy = NO_TARGET_POLICY, target: str | None = None,
             unpack_findings: Iterable[RawFinding] = (), accepted: Iterable[str] = ()) -> VetReport:
    """Check the tree at `root` (already unpacked) and return the report; never raises on findings."""
    tree = RootFS(root)
    raw: list[RawFinding] = list(unpack_findings)
    run: list[str] = []
    for rule in all_rules().values():
        if rule.check is None:
            run.append(rule.id)  # archive rules: reported by the unpacker
            continue
        if rule.group != "always" and rule.group not in policy.requires:
            continue
        run.append(rule.id)
        raw.extend(rule.check(tree))
    return decide(raw, subject, policy, target, run, set(accepted))


def decide(raw: list[RawFinding], subject: str, policy: VetPolicy, target: str | None,
           rules_run: list[str], accepted: set[str]) -> VetReport:
    rules = all_rules()
    merged: dict[tuple[str, Severity], list[str]] = {}
    for r in raw:
        severity = r.severity if r.severity is not None else rules[r.rule].severity
        merged.setdefault((r.rule, severity), []).extend(r.paths)
    findings = []
    for (rule_id, severity), paths in sorted(merged.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        rule = rules[rule_id]
        is_accepted = rule_id in accepted
        shown = sorted(set(paths))
        extra = len(shown) - MAX_PATHS
        findings.append(Finding(
            rule=rule_id, severity=severity.label, message=rule.message, hint=rule.hint,
            paths=shown[:MAX_PATHS] + ([f"... and {extra} more"] if extra > 0 else []),
            blocking=severity >= policy.block_at and not is_accepted, accepted=is_accepted))
    verdict = Verdict.FAIL if any(f.blocking for f in findings) else Verdict.PASS
    report = VetReport(subject=subject, target=target, policy=policy.name, verdict=verdict,
                       block_at=policy.block_at.label, findings=findings, rules_run=rules_run,
                       accepted_rules=sorted(accepted))
    log.info("vetted %s for %s: %s", subject, target or "no target", report.summary())
    return report
