"""What a check of an image's tree reports before policy is applied: shared by the safe unpacker (used by
clone, builder fetches and the registrar alike) and the register stage's vetting rules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True)
class RawFinding:
    """What a rule check or the unpacker returns before policy is applied."""

    rule: str
    paths: tuple[str, ...] = ()
    detail: str = ""
    severity: Severity | None = None
    """Overrides the rule's severity for this finding (e.g. a standard /dev node is only info)."""
