"""`fg-image launch` (N machines from a stored disk image, a job on them, its results back, the machines gone)
and `fg-image instances` (what is running, from the repository's launch records)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import typer

from rain.cli import render
from rain.cli.common import err_console, interrupted_as, open_repo, settings
from rain.cli.images import fetch_image
from rain.cli.instances import forget, logs_root, release_leftovers
from rain.cli.untrusted import checked_id, markup
from rain.errors import InvalidInput, TargetError
from rain.launch import records
from rain.launch.cap import claimed
from rain.repository.acting import HOST
from rain.repository.base import Repository
from rain.repository.models import ID_RE, Image, Launch

if TYPE_CHECKING:
    from rain.host.ssh import KeyPair
    from rain.launch.cloud import CloudSite
    from rain.launch.fleet import Fleet
    from rain.launch.job import Job
    from rain.launch.local import LocalSite

commands = typer.Typer()

DISK_FORMATS = ("qcow2", "raw")
DEFAULT_USERS = {"debian": "debian", "ubuntu": "ubuntu", "rocky": "rocky", "alma": "almalinux",
                 "centos": "cloud-user", "fedora": "fedora"}
"""The default user each family's cloud images let in (what cloud-init makes from its system_info)."""
LAUNCH_TARGETS = ("qemu", "hpc", "openstack", "opennebula", "ec2")


@commands.command("launch")
def launch(
    image_id: str = typer.Argument(..., help="id of an image in the repository"),
    target: str = typer.Option("qemu", "--target", "-t", help="where the machines run: qemu (this host), "
                               "hpc (the site's nodes netboot it), openstack, opennebula or ec2"),
    site_name: str = typer.Option(None, "--site", help="the target's site in the targets file (default: the only "
                                  "one / default)"),
    count: int = typer.Option(1, "--count", "-n", min=1, help="how many machines"),
    size: str = typer.Option(None, "--size", help="openstack: the machines' flavor; opennebula: CPUSxMiB; "
                             "ec2: an instance type (default: the site's)"),
    run: Path = typer.Option(None, "--run", help="script to run on the first machine (the head)"),
    upload: Path = typer.Option(None, "--upload", help="directory whose contents go to ~/job on every machine"),
    download: str = typer.Option(None, "--download", help="directory under the head's ~/job to bring back "
                                 "(into a local directory of the same name)"),
    interactive: bool = typer.Option(False, "--interactive", help="print how to log in to the head; release the "
                                     "machines when you press Enter"),
    detach: bool = typer.Option(False, "--detach", help="leave the machines running (see `fg-image instances`)"),
    user: str = typer.Option(None, "--user", help="user to log in as (default: the image's cloud user)"),
    memory: int = typer.Option(None, "--memory", min=256, help="qemu, hpc: MiB of RAM per machine [default: 1024]"),
    accel: str = typer.Option(None, "--accel", help="qemu, hpc: tcg (works everywhere, the default) or kvm"),
    boot_timeout: float = typer.Option(900.0, "--boot-timeout", min=1, help="seconds for all machines to "
                                       "answer SSH"),
) -> None:
    """Start machines from an image and, with --run, run SCRIPT on the head with the machines file's path
    in RAIN_MACHINES, bring --download back and release every machine (also on failure and Ctrl-C): the
    exit code is the script's. Or keep them: --interactive until you press Enter, --detach until
    `fg-image instances stop`. On an hpc site or a cloud the image is registered first if you have not
    registered it there. The launch_lifetime setting bounds them all (a cloud's: by your next launch)."""
    from rain.host.ssh import KeyPair
    from rain.launch.job import Job, remote_dir

    modes = [m for m, on in (("--run", run is not None), ("--interactive", interactive), ("--detach", detach)) if on]
    if len(modes) != 1:
        raise InvalidInput("give one of --run SCRIPT, --interactive or --detach" if not modes
                           else f"{' and '.join(modes)} do not go together", hint="see `fg-image launch --help`")
    if target not in LAUNCH_TARGETS:
        raise InvalidInput(f"launch on {target!r} is not available", hint="use --target " + " or ".join(LAUNCH_TARGETS))
    if target == "qemu" and site_name is not None:
        raise InvalidInput("--site is for the hpc and cloud targets", hint="qemu runs on this host; drop it")
    if target in records.LOCAL_TARGETS and size is not None:
        raise InvalidInput("--size is for a cloud target", hint=f"{target} takes --memory; drop it")
    if target not in records.LOCAL_TARGETS and (memory is not None or accel is not None):
        raise InvalidInput("--memory and --accel are for the qemu and hpc targets", hint=f"{target} takes --size")
    if not ID_RE.match(image_id):
        raise InvalidInput(f"bad image id {image_id[:40]!r}", hint="ids are 12 hex digits; see `fg-image list`")
    if run is not None and not run.is_file():
        raise InvalidInput(f"--run {run}: no such file", hint="give the script to run on the head")
    if run is None and (upload is not None or download is not None):
        raise InvalidInput("--upload and --download go with --run", hint="add --run SCRIPT, or drop them")
    if upload is not None and not upload.is_dir():
        raise InvalidInput(f"--upload {upload}: no such directory", hint="give a directory to copy to each machine")
    wanted = remote_dir(download) if download is not None else None
    if download is not None and Path(download).exists():
        raise InvalidInput(f"--download {download}: {download} is already here",
                           hint="move it away or remove it first: the results come back as a new directory")
    s = settings()
    repo = open_repo()
    image = repo.show(image_id)
    checked_id(image.id, image_id)
    if target == "qemu":
        site: Site = _local_site(image, user, count, memory or 1024, accel or "tcg")
    elif target == "hpc":
        site = _hpc_site(site_name, user, count, memory or 1024, accel or "tcg")
    else:
        site = _cloud_site(target, site_name, user, size)
    site.check(count)

    def progress(line: str) -> None:
        err_console.print(markup(line))

    release_leftovers(repo, progress)
    key = KeyPair.generate(f"rain-launch@{image.id}")

    record: Launch | None = None

    def recorded(fleet: Fleet) -> None:
        nonlocal record
        record = claim.recorded(lambda: repo.add_launch(records.launch_in(
            image, target, site.site_name, site.user, HOST, fleet, int(s.launch_lifetime))))
        records.mark(fleet, record, key)

    kept = False
    status = 0
    with interrupted_as("launch interrupted", "its machines were released"), \
            claimed(s.data_path / "launch" / "claims", count, int(s.launch_max_machines), lambda: _running(repo)) \
            as claim:
        try:
            with _boot(site, target, repo, image, count, key, boot_timeout, progress, recorded) as fleet:
                assert record is not None
                with Job(fleet.machines, site.user, key) as job:
                    job.prepare(upload)
                    if detach:
                        fleet.keep()
                        kept = True
                        progress(f"launch {record.id}: {count} machine(s) left running until "
                                 f"{render.when(record.expires)}; `fg-image instances stop {record.id}` "
                                 "releases them")
                        print(records.ssh_command(fleet, site.user))
                        return
                    if interactive:
                        print(records.ssh_command(fleet, site.user), flush=True)
                        progress("press Enter (or Ctrl-C) to release the machines")
                        sys.stdin.readline()
                    else:
                        assert run is not None
                        progress(f"running {run.name} on {fleet.machines[0].name}")
                        status = job.run(run, _out)
                        if wanted is not None:
                            _download(job, wanted, Path(download), status, progress)
        finally:
            if record is not None and not kept:
                if unreleased := getattr(site, "unreleased", ""):
                    progress(f"warning: launch {record.id}'s machines may still run ({unreleased}); "
                             f"`fg-image instances stop {record.id}` releases them")
                else:
                    forget(repo, record.id, progress)
    if not getattr(site, "unreleased", ""):
        progress(f"released {count} machine(s)")
    raise typer.Exit(status)


class Site(Protocol):
    """What `launch` needs of a site before it starts anything (LocalSite, a CloudSite)."""

    @property
    def site_name(self) -> str: ...
    @property
    def user(self) -> str: ...
    def check(self, count: int) -> None: ...


def _local_site(image: Image, user: str | None, count: int, memory: int, accel: str) -> LocalSite:
    from rain.launch.local import LocalSite
    from rain.register.seeds import username

    if image.format not in DISK_FORMATS:
        raise InvalidInput(f"image {image.id} is {image.format}, not a bootable disk",
                           hint="launch a qcow2 or raw image: generate the recipe with --format qcow2")
    family = image.os.family.lower()
    if user is None and family not in DEFAULT_USERS:
        raise InvalidInput(f"image {image.id}'s OS family {image.os.family or '(none)'!r} has no known cloud user",
                           hint="give --user: the user its cloud-init makes (its default_user)")
    return _on_this_host(LocalSite(Path(), image.format, username(user or DEFAULT_USERS[family])), count, memory,
                         accel)


def _hpc_site(site_name: str | None, user: str | None, count: int, memory: int, accel: str) -> LocalSite:
    """The hpc site's local nodes: QEMU on this host, netbooting what the site publishes."""
    from rain.launch.local import LocalSite
    from rain.launch.netboot import Netboot
    from rain.register.targets.hpc import HpcSite
    from rain.register.targets.sites import open_target

    hpc, name = open_target(settings(), "hpc", site_name)
    site = hpc.site  # type: ignore[attr-defined]
    assert isinstance(site, HpcSite)
    if site.nodes != "qemu":
        raise InvalidInput(f"hpc site {name!r} has no nodes Rain can launch on",
                           hint="set nodes: qemu for the site in the targets file (local QEMU nodes that netboot "
                                "it); Rain does not drive a real cluster's nodes")
    if user not in (None, "root"):
        raise InvalidInput(f"--user {user}: netbooted nodes let root in", hint="drop --user")
    return _on_this_host(LocalSite(Path(), "", "root", netboot=Netboot(site.provision_dir, site.http_url),
                                   site_name=name), count, memory, accel)


def _on_this_host(site: LocalSite, count: int, memory: int, accel: str) -> LocalSite:
    """QEMU machines: each its share of this host's cores (up to 4), the memory and accelerator asked for, and
    the launch_lifetime setting."""
    return replace(site, memory_mb=memory, accel=accel, cpus=min(4, max(1, (os.cpu_count() or 1) // count)),
                   lifetime=int(settings().launch_lifetime))


def _cloud_site(target: str, site_name: str | None, user: str | None, size: str | None) -> CloudSite:
    from rain.launch.cloud import open_site

    return open_site(settings(), target, site_name, user, size)


@contextlib.contextmanager
def _boot(site: Site, target: str, repo: Repository, image: Image, count: int, key: KeyPair, timeout: float,
          progress: Callable[[str], None], started: Callable[[Fleet], None]) -> Iterator[Fleet]:
    """The site's machines from the image: qemu boots its disk from the launch cache; a cloud boots the
    image as Rain registered it there (registering it first if it is not yet)."""
    from rain.launch.cloud import CloudSite
    from rain.launch.local import LocalSite

    if isinstance(site, LocalSite) and site.netboot is not None:
        published = replace(site.netboot, slug=_registered(repo, image, target, site.site_name, progress))
        published.check_published(site.site_name)
        local = replace(site, netboot=published, logs=_log_dir())
        with local.machines(count, key, timeout, report=progress, started=started) as fleet:
            yield fleet
        return
    if isinstance(site, LocalSite):
        local = replace(site, disk=_cached_disk(repo, image), logs=_log_dir())
        with local.machines(count, key, timeout, report=progress, started=started) as fleet:
            yield fleet
        return
    assert isinstance(site, CloudSite)
    remote_id = _registered(repo, image, target, site.site_name, progress)
    with site.machines(count, key, timeout, remote_id, report=progress, started=started) as fleet:
        yield fleet


REMOTE_IDS = {"hpc": re.compile(r"^rain-[A-Za-z0-9][A-Za-z0-9._+-]{0,91}$"),
              "openstack": re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$"),
              "opennebula": re.compile(r"^[0-9]{1,10}$"), "ec2": re.compile(r"^ami-[0-9a-f]{8,17}$")}
"""What each target's registration id looks like: a registration is anyone's writing, checked before use."""


def _registered(repo: Repository, image: Image, target: str, site_name: str, progress: Callable[[str], None]) -> str:
    """The image's id on the target's site: this user's registration there, or a new one (vetted, adapted,
    published). Another user's registration is theirs (their project, their account): never used."""
    me = repo.whoami().name
    for registration in image.registrations:
        if registration.target == target and registration.site == site_name and registration.by == me:
            if not REMOTE_IDS[target].match(registration.remote_id) or ".." in registration.remote_id:
                raise TargetError(f"image {image.id}'s registration on {target}/{site_name} has a malformed id "
                                  f"{registration.remote_id[:40]!r}",
                                  hint=f"deregister it (fg-image deregister {image.id} --target {target}) and launch "
                                       "again: it registers anew")
            return registration.remote_id
    from rain.cli.progress import step_reporter
    from rain.cli.register import render_report
    from rain.register.pipeline import VetRejected, register

    progress(f"image {image.id} is not registered on {target}/{site_name}: registering it first")
    try:
        outcome = register(repo, settings(), image.id, target, site_name, reporter=step_reporter())
    except VetRejected as e:
        render_report(e.report)
        raise
    progress(f"registered {image.id} on {target}/{site_name} as {outcome.remote_id}")
    return outcome.remote_id


def _download(job: Job, wanted: str, dest: Path, status: int, progress: Callable[[str], None]) -> None:
    """The results back; when the script failed, a missing or refused download does not hide its status."""
    try:
        files = job.download(wanted, dest)
    except TargetError as e:
        if status == 0:
            raise
        progress(f"warning: nothing came back: {e.message}")
        return
    progress(f"{files} file(s) back in {dest}/")


def _running(repo: Repository) -> int:
    """This user's machines that count against launch_max_machines: qemu ones running on this host, and every
    one recorded on a cloud."""
    return sum(records.alive(launch) if launch.target in records.LOCAL_TARGETS else len(launch.machines)
               for launch in repo.launches() if launch.target not in records.LOCAL_TARGETS or launch.host == HOST)


def _log_dir() -> Path:
    """DATA_DIR/launch/logs/DATE-TIME-XXXXXXXX: this launch's console logs, kept if it fails."""
    root = logs_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))


def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _cached_disk(repo: Repository, image: Image) -> Path:
    """The image's disk in the launch cache (DATA_DIR/launch/images), fetched and checked once."""
    cache = settings().data_path / "launch" / "images"
    cache.mkdir(parents=True, exist_ok=True)
    disk = cache / f"{image.id}.{image.format}"
    with open(cache / f".{image.id}.lock", "w") as lock:  # two launches of one image fetch it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not disk.is_file() or disk.stat().st_size != image.size:
            fetch_image(repo, image, disk)
    return disk


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
