"""The register pipeline: fetch → unpack → vet → adapt → pack → (boot test) → publish → record.

Each step registers its undo on an ExitStack as soon as it acquires something
(temporary trees, the remote image, the derived image); a failure anywhere
replays them in reverse, so nothing is left half-published.

With `output`, the last two steps are replaced: the packed image is written to
a local path (export.py) and the history notes it; no site is contacted.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rain import __version__
from rain.arch import Architecture
from rain.config import Settings
from rain.errors import InvalidInput
from rain.image import sbom
from rain.image.rootfs import LinkLoop, RootFS
from rain.progress import Reporter
from rain.register import adapt, export
from rain.register.chroot import Sandbox
from rain.register.models import NO_TARGET_POLICY, Label, Outcome, Packed, VetPolicy, VetReport
from rain.register.targets.base import BootTestable, Preflight, Shares, TargetName, target_name
from rain.register.targets.sites import open_offline, open_target
from rain.register.unpack import unpack
from rain.register.vet import VetRejected, vet_tree  # noqa: F401  (VetRejected: the CLI imports it here)
from rain.repository.base import Repository
from rain.repository.models import Image, ImageMeta

log = logging.getLogger(__name__)
BOOT_TIMEOUT = 600.0


def _logged(event: str, step: str, detail: str) -> None:
    """The sink when nobody watches: each step's start goes to the log."""
    if event == "start":
        log.info("register: %s", step)


def fetch_and_vet(repo: Repository, image: Image, target: str | None, policy: VetPolicy, work: Path,
                  reporter: Reporter, max_size: int | None = None,
                  store: bool = True) -> tuple[Path, VetReport]:
    """Download the image (as the calling user), unpack it safely and vet it; store the report
    (unless `store` is false: `--output` leaves the image's record as it was).

    A target that boots the image's own kernel (its policy requires "kernel") refuses an image without
    one right after the unpack: that is a recipe to fix, not a finding to quarantine the image for."""
    blob = work / f"image.{image.format}"
    with reporter.step("fetch"), open(blob, "wb") as f:
        repo.get(image.id, f)
    root = work / "root"
    with reporter.step("unpack"):
        findings = unpack(blob, root, image.format, max_size)
    blob.unlink()
    if target and "kernel" in policy.requires and not _has_kernel(root):
        raise InvalidInput(f"image {image.id} has no kernel (no /boot/vmlinuz-* nor /vmlinuz), and {target} "
                           "boots the image's own kernel",
                           hint="add linux-image-amd64 (Debian) or kernel (RPM) to the recipe's packages")
    with reporter.step("vet"):
        accepted = image.accepted_rules.get(target or "", []) if target else []
        report = vet_tree(root, f"{image.name} ({image.id})", policy, target, findings, accepted)
        if target and store:
            repo.set_vetting(image.id, target, report.model_dump(mode="json"))
    return root, report


def _has_kernel(root: Path) -> bool:
    """A kernel file where the packers look for one; a link leading out of the image counts as none."""
    tree = RootFS(root)
    if tree.kernels():
        return True
    try:
        return tree.resolve("/vmlinuz").is_file()
    except (OSError, LinkLoop):
        return False


def register(repo: Repository, settings: Settings, image_id: str, target_text: str, site: str | None = None,
             boot_test: bool = False, reporter: Reporter | None = None,
             boot_timeout: float = BOOT_TIMEOUT, output: Path | None = None, force: bool = False,
             share_with: Sequence[str] = ()) -> Outcome:
    """Vet, adapt and pack an image for a target, boot-test it if asked, then publish it and record
    the registration, or, with `output`, write it to that path and note the export in the history.
    `share_with`: projects that become members of the published image (targets that share: openstack)."""
    reporter = (reporter or Reporter(_logged)).child("")  # this registration's timings only
    name = target_name(target_text)
    if output is not None:  # a site Rain cannot reach: no credentials, no targets file needed
        export.check_destination(output, force)
        target, site_name = open_offline(settings, name, site)
    else:
        target, site_name = open_target(settings, name, site)  # settings checked before a byte moves
        if isinstance(target, Preflight):
            target.preflight()  # and the credentials and endpoint, before minutes of adapt and pack
    if share_with:
        _share(target, name, share_with, output)
    if boot_test and not isinstance(target, BootTestable):
        raise InvalidInput(f"--boot-test is not available for {name.value}",
                           hint="targets with a boot test: " + ", ".join(boot_testable_targets()))
    image = repo.show(image_id)
    source_sbom = sbom.digest_of(image.provenance, image.sha256, image.format)  # what the copy derives from
    with tempfile.TemporaryDirectory(prefix="rain-register-") as tmp, contextlib.ExitStack() as undo:
        work = Path(tmp)  # removed on success and failure alike; `undo` holds only what a failure takes back
        root, report = fetch_and_vet(repo, image, name.value, target.vet_policy, work, reporter,
                                     settings.unpack_max, store=output is None)
        if report.verdict != "pass":
            raise VetRejected(report, hint=f"fix the image and upload it again; `fg-image vet {image.id} "
                                           f"--target {name.value}` shows the findings, an admin may accept a rule")
        with reporter.step("adapt"):  # what the image's own programs print goes to the adapt log
            adapt_log = settings.data_path / "adapt-logs" / f"{image.id}-{name.value}.log"
            adapt_log.parent.mkdir(parents=True, exist_ok=True)
            adapt_log.unlink(missing_ok=True)
            changes = target.adapt(root, Sandbox(settings, repo, adapt_log))
        with reporter.step("vet-adapted"):  # what adapt installed is vetted like the image itself
            adapt.vet_adapted(root, f"{image.name} ({image.id})", target.vet_policy, name.value,
                              image.accepted_rules.get(name.value, []))
        with reporter.step("pack"):
            packed = target.pack(root, work / "packed")
        if boot_test:
            log_path = settings.data_path / "boot-logs" / f"{image.id}-{name.value}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with reporter.step("boot-test"):
                target.boot_test(packed, log_path, boot_timeout)  # type: ignore[attr-defined]
        if output is not None:
            return _export(repo, image, name, site_name, packed, output, force, report, changes, reporter,
                           source_sbom)
        known = Architecture.lookup(image.os.arch)  # Debian's names → the clouds' (Glance, labels)
        arch = known.cloud if known else image.os.arch or "x86_64"
        label = Label(image.id, image.name, image.os.family, image.os.release, arch)
        with reporter.step("publish"):
            remote_id = target.publish(packed, label)
            undo.callback(target.delete, remote_id)
        with reporter.step("record"):
            derived = _store_derived(repo, image, name.value, site_name, packed.primary_path,
                                     target.derived_format, changes, source_sbom)
            undo.callback(repo.remove, derived.id, True)
            detail = {"derived_image": derived.id, "files": sorted(packed.files), "changes": changes,
                      **({"sbom": source_sbom} if source_sbom else {}),
                      "timings": reporter.seconds()}  # the steps before this one
            repo.add_registration(image.id, name.value, site_name, remote_id, detail)
        undo.pop_all()
    detail["timings"] = reporter.seconds()  # the outcome's copy shows the record step too
    return Outcome(name.value, site_name, remote_id, report, derived.id, detail, changes, reporter.seconds())


def _share(target: object, name: TargetName, projects: Sequence[str], output: Path | None) -> None:
    """--share-with-project: checked before anything moves."""
    if not isinstance(target, Shares) or output is not None:
        raise InvalidInput(f"--share-with-project is not available for {name.value}"
                           + (" with --output" if output is not None else ""),
                           hint="image members are Glance's: register on openstack, without --output")
    for project in projects:
        try:
            target.add_member(project)
        except ValueError as e:
            raise InvalidInput(f"--share-with-project: {e}") from e


def _export(repo: Repository, image: Image, name: TargetName, site_name: str, packed: Packed, output: Path,
            force: bool, report: VetReport, changes: list[str], reporter: Reporter,
            source_sbom: str | None) -> Outcome:
    """`--output`: the packed files go to `output`; the catalog gains only a history entry (no derived
    image, no registration: the copy left the repository's sight). If that entry cannot be written,
    `output` is taken back, so a success always has its entry."""
    with reporter.step("write"):
        files = export.write_output(packed, output, force)
    detail = {"format": packed.format, "files": files, "directory": export.is_directory(packed),
              "changes": changes, "timings": reporter.seconds()}
    with reporter.step("record"):
        try:
            repo.record_export(image.id, name.value, {"format": packed.format, "files": files,
                                                      **({"sbom": source_sbom} if source_sbom else {})})
        except BaseException:
            export.remove(output)
            raise
    detail["timings"] = reporter.seconds()  # --json shows every step, the record too
    return Outcome(name.value, site_name, "", report, None, detail, changes, reporter.seconds(), output=output)


def boot_testable_targets() -> list[str]:
    """The targets that have a boot test today (read from the target classes, not listed by hand)."""
    return [t.value for t in TargetName if callable(getattr(t.load(), "boot_test", None))]


def _store_derived(repo: Repository, image: Image, target: str, site: str, path: Path, fmt: str,
                   changes: list[str], source_sbom: str | None) -> Image:
    meta = ImageMeta(name=f"{image.name}-{target}"[:128], os=image.os, format=fmt, parent=image.id,
                     tags=[f"target:{target}"], description=f"{image.name} adapted by Rain for {target} ({site})",
                     provenance={"derived_from": image.id, "target": target, "site": site,
                                 "changes": changes, "tool": f"rain {__version__}",
                                 **({"sbom": source_sbom} if source_sbom else {})})
    with open(path, "rb") as f:
        return repo.put(f, meta, path.stat().st_size)


def vet_image(repo: Repository, image_id: str, target: str | None, settings: Settings,
              reporter: Reporter | None = None) -> VetReport:
    """`fg-image vet ID`: vet a repository image (storing the report when a target is given)."""
    policy = _policy(target)
    image = repo.show(image_id)
    with tempfile.TemporaryDirectory(prefix="rain-vet-") as tmp:
        _, report = fetch_and_vet(repo, image, target, policy, Path(tmp), reporter or Reporter(_logged),
                                  settings.unpack_max)
    return report


def vet_path(path: Path, target: str | None = None, fmt: str | None = None, reporter: Reporter | None = None,
             max_size: int | None = None) -> VetReport:
    """`fg-image vet PATH`: vet a local image file or root directory; nothing is stored.
    `max_size` bounds the unpacked tree as for repository images (the `unpack_max` setting)."""
    from rain.register.unpack import detect_format, sweep

    if not path.exists():
        raise InvalidInput(f"no such image file or directory: {path}")
    reporter = reporter or Reporter(_logged)
    policy = _policy(target)
    name = target_name(target).value if target else None
    if detect_format(path, fmt) == "dir":
        with reporter.step("vet"):
            return vet_tree(path, str(path), policy, name, sweep(path))
    with tempfile.TemporaryDirectory(prefix="rain-vet-") as tmp:
        with reporter.step("unpack"):
            findings = unpack(path, Path(tmp) / "root", fmt, max_size)
        with reporter.step("vet"):
            return vet_tree(Path(tmp) / "root", str(path), policy, name, findings)


def _policy(target: str | None) -> VetPolicy:
    return target_name(target).load().vet_policy if target else NO_TARGET_POLICY


def deregister(repo: Repository, settings: Settings, image_id: str, target_text: str, site: str | None = None) -> Image:
    """Delete the caller's registrations of the image from the target site and drop their records.

    Only the caller's own: another user's copy lives in their project, reached with their credentials."""
    name = target_name(target_text)
    me = repo.whoami().name
    image = repo.show(image_id)
    regs = [r for r in image.registrations
            if r.target == name.value and (site is None or r.site == site) and r.by == me]
    if not regs:
        raise InvalidInput(f"image {image_id} is not registered on {name.value}"
                           + (f" site {site}" if site else "") + " by you",
                           hint=f"`fg-image registrations {image_id}` lists where it is registered and by whom")
    for site_name in sorted({r.site for r in regs}):
        target, _ = open_target(settings, name, site_name)
        for reg in regs:
            if reg.site == site_name:
                target.delete(reg.remote_id)
        image = repo.remove_registration(image_id, name.value, site_name)
    return image
