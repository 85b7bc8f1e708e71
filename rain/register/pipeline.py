"""The register pipeline: fetch → unpack → vet → adapt → pack → (boot test) → publish → record.

Each step registers its undo on an ExitStack as soon as it acquires something
(temporary trees, the remote image, the derived image); a failure anywhere
replays them in reverse, so nothing is left half-published.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from rain import __version__
from rain.config import Settings
from rain.errors import InvalidInput, VetFailed
from rain.register.models import NO_TARGET_POLICY, Label, Outcome, VetPolicy, VetReport
from rain.register.targets.base import BootTestable, target_class, target_name
from rain.register.targets.sites import open_target
from rain.register.unpack import unpack
from rain.register.vet import vet_tree
from rain.repository.models import Image, ImageMeta

log = logging.getLogger(__name__)
BOOT_TIMEOUT = 600.0
ARCH_NAMES = {"amd64": "x86_64", "arm64": "aarch64"}  # Debian's names → the clouds' (EC2, Glance)


class Reporter(Protocol):
    def step(self, name: str) -> contextlib.AbstractContextManager[None]: ...


class QuietReporter:
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        log.info("register: %s", name)
        yield


class VetRejected(VetFailed):
    """Vetting failed; the report says which rules and how to fix them."""

    def __init__(self, report: VetReport, hint: str) -> None:
        super().__init__(report.summary(), hint=hint)
        self.report = report


def _timed(reporter: Reporter, timings: dict[str, float], name: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def step() -> Iterator[None]:
        start = time.monotonic()
        with reporter.step(name):
            yield
        timings[name] = round(time.monotonic() - start, 2)

    return step()


def fetch_and_vet(repo: Any, image: Image, target: str | None, policy: Any, work: Path,
                  reporter: Reporter, timings: dict[str, float], max_size: int | None = None) -> tuple[Path, VetReport]:
    """Download the image (as the calling user), unpack it safely and vet it; store the report."""
    blob = work / f"image.{image.format}"
    with _timed(reporter, timings, "fetch"), open(blob, "wb") as f:
        repo.get(image.id, f)
    root = work / "root"
    with _timed(reporter, timings, "unpack"):
        findings = unpack(blob, root, image.format, max_size)
    blob.unlink()
    with _timed(reporter, timings, "vet"):
        accepted = image.accepted_rules.get(target or "", []) if target else []
        report = vet_tree(root, f"{image.name} ({image.id})", policy, target, findings, accepted)
        if target:
            repo.set_vetting(image.id, target, report.model_dump(mode="json"))
    return root, report


def register(repo: Any, settings: Settings, image_id: str, target: str, site: str | None = None,
             boot_test: bool = False, reporter: Reporter | None = None,
             boot_timeout: float = BOOT_TIMEOUT) -> Outcome:
    reporter = reporter or QuietReporter()
    timings: dict[str, float] = {}
    name = target_name(target)
    provider, site_name = open_target(settings, name, site)  # settings checked before a byte moves
    if boot_test and not isinstance(provider, BootTestable):
        raise InvalidInput(f"--boot-test is not available for {name.value}",
                           hint="boot tests run for targets that boot the image's own kernel here: hpc")
    image = repo.show(image_id)
    with tempfile.TemporaryDirectory(prefix="rain-register-") as tmp, contextlib.ExitStack() as undo:
        work = Path(tmp)  # removed on success and failure alike; `undo` holds only what a failure takes back
        root, report = fetch_and_vet(repo, image, name.value, provider.vet_policy, work, reporter, timings,
                                     settings.unpack_max)
        if report.verdict != "pass":
            raise VetRejected(report, hint=f"fix the image and upload it again; `fg-image vet {image.id} "
                                           f"--target {name.value}` shows the findings, an admin may accept a rule")
        with _timed(reporter, timings, "adapt"):
            changes = provider.adapt(root)
        with _timed(reporter, timings, "pack"):
            packed = provider.pack(root, work / "packed")
        if boot_test:
            log_path = settings.data_path / "boot-logs" / f"{image.id}-{name.value}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with _timed(reporter, timings, "boot-test"):
                provider.boot_test(packed, log_path, boot_timeout)  # type: ignore[attr-defined]
        arch = ARCH_NAMES.get(image.os.arch, image.os.arch) or "x86_64"
        label = Label(image.id, image.name, image.os.family, image.os.release, arch)
        with _timed(reporter, timings, "publish"):
            remote_id = provider.publish(packed, label)
            undo.callback(provider.delete, remote_id)
        with _timed(reporter, timings, "record"):
            derived = _store_derived(repo, image, name.value, site_name, packed.primary_path,
                                     provider.derived_format, changes)
            undo.callback(repo.remove, derived.id, True)
            detail = {"derived_image": derived.id, "files": sorted(packed.files), "changes": changes,
                      "timings": timings}
            repo.add_registration(image.id, name.value, site_name, remote_id, detail)
        undo.pop_all()
    return Outcome(name.value, site_name, remote_id, report, derived.id, detail, changes, timings)


def _store_derived(repo: Any, image: Image, target: str, site: str, path: Path, fmt: str,
                   changes: list[str]) -> Image:
    meta = ImageMeta(name=f"{image.name}-{target}"[:128], os=image.os, format=fmt, parent=image.id,
                     tags=[f"target:{target}"], description=f"{image.name} adapted by Rain for {target} ({site})",
                     provenance={"derived_from": image.id, "target": target, "site": site,
                                 "changes": changes, "tool": f"rain {__version__}"})
    with open(path, "rb") as f:
        return repo.put(f, meta, path.stat().st_size)


def vet_image(repo: Any, image_id: str, target: str | None, settings: Settings,
              reporter: Reporter | None = None) -> VetReport:
    """`fg-image vet ID`: vet a repository image (storing the report when a target is given)."""
    policy = _policy(target)
    image = repo.show(image_id)
    with tempfile.TemporaryDirectory(prefix="rain-vet-") as tmp:
        _, report = fetch_and_vet(repo, image, target, policy, Path(tmp), reporter or QuietReporter(), {},
                                  settings.unpack_max)
    return report


def vet_path(path: Path, target: str | None = None, fmt: str | None = None) -> VetReport:
    """`fg-image vet PATH`: vet a local image file or root directory; nothing is stored."""
    from rain.register.unpack import detect_format, sweep

    if not path.exists():
        raise InvalidInput(f"no such image file or directory: {path}")
    policy = _policy(target)
    name = target_name(target).value if target else None
    if detect_format(path, fmt) == "dir":
        return vet_tree(path, str(path), policy, name, sweep(path))
    with tempfile.TemporaryDirectory(prefix="rain-vet-") as tmp:
        findings = unpack(path, Path(tmp) / "root", fmt)
        return vet_tree(Path(tmp) / "root", str(path), policy, name, findings)


def _policy(target: str | None) -> VetPolicy:
    return target_class(target_name(target)).vet_policy if target else NO_TARGET_POLICY


def deregister(repo: Any, settings: Settings, image_id: str, target: str, site: str | None = None) -> Image:
    """Delete the caller's registrations of the image from the target site and drop their records.

    Only the caller's own: another user's copy lives in their project, reached with their credentials."""
    name = target_name(target)
    me = repo.whoami().name
    image = repo.show(image_id)
    regs = [r for r in image.registrations
            if r.target == name.value and (site is None or r.site == site) and r.by == me]
    if not regs:
        raise InvalidInput(f"image {image_id} is not registered on {name.value}"
                           + (f" site {site}" if site else "") + " by you",
                           hint=f"`fg-image registrations {image_id}` lists where it is registered and by whom")
    for site_name in sorted({r.site for r in regs}):
        provider, _ = open_target(settings, name, site_name)
        for reg in regs:
            if reg.site == site_name:
                provider.delete(reg.remote_id)
        image = repo.remove_registration(image_id, name.value, site_name)
    return image
