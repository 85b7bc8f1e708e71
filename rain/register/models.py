"""Typed data that passes between the register steps: findings, reports, policies, packed files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from rain.image.findings import RawFinding as RawFinding  # re-exported: the register steps' vocabulary
from rain.image.findings import Severity as Severity


class UnpackFormat(StrEnum):
    """What register can read an image from (`vet --format`, an image's stored format)."""

    TAR_ZST = "tar.zst"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    TAR_XZ = "tar.xz"
    RAW = "raw"
    QCOW2 = "qcow2"
    SQUASHFS = "squashfs"
    DIR = "dir"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


class Finding(BaseModel):
    """One thing a rule found, with what to do about it."""

    rule: str
    severity: str
    message: str
    hint: str
    paths: list[str] = Field(default_factory=list)
    blocking: bool = False
    accepted: bool = False


class VetReport(BaseModel):
    """The JSON report stored with the image for one target (or for no target)."""

    subject: str
    target: str | None = None
    policy: str
    verdict: Verdict
    block_at: str
    findings: list[Finding] = Field(default_factory=list)
    rules_run: list[str] = Field(default_factory=list)
    accepted_rules: list[str] = Field(default_factory=list)
    when: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    def summary(self) -> str:
        if self.verdict == Verdict.PASS:
            return f"vetting passed ({len(self.findings)} non-blocking finding(s))"
        rules = ", ".join(f.rule for f in self.blocking)
        return f"vetting failed for {self.target or 'any target'} on {len(self.blocking)} rule(s): {rules}"


@dataclass(frozen=True)
class VetPolicy:
    """How strict a target is: the lowest severity that blocks, and what the target requires."""

    name: str
    block_at: Severity
    requires: frozenset[str] = frozenset()
    """Optional rule groups the target turns on, e.g. {"kernel", "nvme_ena"}."""


NO_TARGET_POLICY = VetPolicy("default", Severity.HIGH)


@dataclass(frozen=True)
class Packed:
    """What a target's pack step produced: named files in one directory, one of them primary."""

    directory: Path
    files: dict[str, Path]
    primary: str
    format: str

    @property
    def primary_path(self) -> Path:
        return self.files[self.primary]


@dataclass(frozen=True)
class Label:
    """What a target needs to know about the image it publishes."""

    image_id: str
    name: str
    os_family: str = ""
    os_release: str = ""
    arch: str = "x86_64"

    @property
    def slug(self) -> str:
        return f"rain-{self.name}-{self.image_id}"[:96]


@dataclass
class Outcome:
    """What register() returns: where the image went (a site, or a local path) and what was stored."""

    target: str
    site: str
    remote_id: str
    report: VetReport
    derived_id: str | None = None
    detail: dict = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    output: Path | None = None
    """`--output`: where the packed image was written instead of being published (remote_id is then "")."""
