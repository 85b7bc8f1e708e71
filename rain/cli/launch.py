"""`fg-image launch` (N machines from a stored disk image, a job on them, its results back, the machines gone)
and `fg-image instances` (what is running, from the repository's launch records)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rain.cli import render
from rain.cli.common import console, err_console, json_flag, open_repo, print_json, settings
from rain.cli.images import fetch_image
from rain.cli.untrusted import checked_id, markup, plain
from rain.errors import InvalidInput, NotFound, QuotaExceeded
from rain.repository.base import Repository
from rain.repository.models import ID_RE, Image, Launch, LaunchedMachine, LaunchIn, Role

if TYPE_CHECKING:
    from rain.host.ssh import KeyPair
    from rain.launch.local import Fleet

commands = typer.Typer()
instances_app = typer.Typer(help="Machines you launched: list them, stop them.", no_args_is_help=True)

DISK_FORMATS = ("qcow2", "raw")
DEFAULT_USERS = {"debian": "debian", "ubuntu": "ubuntu", "rocky": "rocky", "alma": "almalinux",
                 "centos": "cloud-user", "fedora": "fedora"}
"""The default user each family's cloud images let in (what cloud-init makes from its system_info)."""
HOST = socket.gethostname()


@commands.command("launch")
def launch(
    image_id: str = typer.Argument(..., help="id of a bootable disk image (qcow2 or raw) in the repository"),
    target: str = typer.Option("qemu", "--target", "-t", help="where the machines run: qemu (this host)"),
    count: int = typer.Option(1, "--count", "-n", min=1, help="how many machines"),
    run: Path = typer.Option(None, "--run", help="script to run on the first machine (the head)"),
    upload: Path = typer.Option(None, "--upload", help="directory whose contents go to ~/job on every machine"),
    download: str = typer.Option(None, "--download", help="directory under the head's ~/job to bring back "
                                 "(into a local directory of the same name)"),
    interactive: bool = typer.Option(False, "--interactive", help="print how to log in to the head; release the "
                                     "machines when you press Enter"),
    detach: bool = typer.Option(False, "--detach", help="leave the machines running (see `fg-image instances`)"),
    user: str = typer.Option(None, "--user", help="user to log in as (default: the family's cloud user)"),
    memory: int = typer.Option(1024, "--memory", min=256, help="MiB of RAM per machine"),
    accel: str = typer.Option("tcg", "--accel", help="tcg (works everywhere) or kvm"),
    boot_timeout: float = typer.Option(900.0, "--boot-timeout", min=1, help="seconds for all machines to "
                                       "answer SSH"),
) -> None:
    """Start machines from an image and, with --run, run SCRIPT on the head with the machines file's path
    in RAIN_MACHINES, bring --download back and release every machine (also on failure and Ctrl-C): the
    exit code is the script's. Or keep them: --interactive until you press Enter, --detach until
    `fg-image instances stop`. The launch_lifetime setting bounds them all."""
    from rain.host.ssh import KeyPair
    from rain.launch.job import Job, remote_dir
    from rain.launch.local import LocalSite
    from rain.register.seeds import username

    modes = [m for m, on in (("--run", run is not None), ("--interactive", interactive), ("--detach", detach)) if on]
    if len(modes) != 1:
        raise InvalidInput("give one of --run SCRIPT, --interactive or --detach" if not modes
                           else f"{' and '.join(modes)} do not go together", hint="see `fg-image launch --help`")
    if target != "qemu":
        raise InvalidInput(f"launch on {target!r} is not available yet", hint="use --target qemu (this host)")
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
    if image.format not in DISK_FORMATS:
        raise InvalidInput(f"image {image.id} is {image.format}, not a bootable disk",
                           hint="launch a qcow2 or raw image: generate the recipe with --format qcow2")
    _check_cap(repo, count, int(s.launch_max_machines))
    login = username(user or DEFAULT_USERS.get(image.os.family.lower(), "root"))
    disk = _cached_disk(repo, image)
    key = KeyPair.generate(f"rain-launch@{image.id}")
    logs = _log_dir()
    site = LocalSite(disk, image.format, login, memory_mb=memory, accel=accel, logs=logs,
                     cpus=min(4, max(1, (os.cpu_count() or 1) // count)), lifetime=int(s.launch_lifetime))

    def progress(line: str) -> None:
        err_console.print(markup(line))

    with site.machines(count, key, boot_timeout, report=progress) as fleet:
        record = repo.add_launch(_record(image, login, fleet, logs, int(s.launch_lifetime)))
        if detach:
            _keep(fleet, key, record)
            progress(f"launch {record.id}: {count} machine(s) left running until "
                     f"{render.when(record.expires)}; `fg-image instances stop {record.id}` releases them")
            print(_ssh_command(fleet, login, record))
            return
        try:
            if interactive:
                _write_access(fleet, key)
                print(_ssh_command(fleet, login, record))
                progress("press Enter (or Ctrl-C) to release the machines")
                sys.stdin.readline()
                status = 0
            else:
                with Job(fleet.machines, login, key) as job:
                    job.prepare(upload)
                    progress(f"running {run.name} on {fleet.machines[0].name}")
                    status = job.run(run, _out)
                    if wanted is not None:
                        files = job.download(wanted, Path(download))
                        progress(f"{files} file(s) back in {download}/")
        finally:
            _forget(repo, record.id)
        progress(f"released {count} machine(s)")
    raise typer.Exit(status)


def _check_cap(repo: Repository, count: int, cap: int) -> None:
    """The launch_max_machines cap, over this user's qemu machines still running on this host."""
    have = sum(len(launch.machines) for launch in repo.launches() if launch.target == "qemu"
               and launch.host == HOST and _alive(launch) > 0)
    if have + count > cap:
        raise QuotaExceeded(f"{count} more machine(s) would make {have + count}; you may run {cap} at once here",
                            hint="stop some (`fg-image instances stop ID`), or ask for a larger launch_max_machines")


def _record(image: Image, login: str, fleet: Fleet, logs: Path, lifetime: int) -> LaunchIn:
    return LaunchIn(image=image.id, target="qemu", site="local", host=HOST, user=login,
                    expires=datetime.now(UTC) + timedelta(seconds=lifetime),
                    machines=[LaunchedMachine(name=m.name, address=m.address, ssh_host="127.0.0.1", ssh_port=m.port,
                                              remote_id=str(m.pid)) for m in fleet.machines],
                    detail={"work": str(fleet.work), "logs": str(logs)})


def _keep(fleet: Fleet, key: KeyPair, record: Launch) -> None:
    """Leave the machines running: the key and known hosts stay in the launch's directory for `ssh -i`."""
    _write_access(fleet, key)
    (fleet.work / "launch.json").write_text(json.dumps({"id": record.id}) + "\n")
    fleet.keep()


def _write_access(fleet: Fleet, key: KeyPair) -> None:
    private = fleet.work / "id_ed25519"
    private.touch(0o600)
    private.write_text(key.private_openssh)
    (fleet.work / "known_hosts").write_text("".join(
        f"[127.0.0.1]:{m.port} {' '.join(m.host_key.public_line.split()[:2])}\n" for m in fleet.machines))


def _ssh_command(fleet: Fleet, login: str, record: Launch) -> str:
    head = fleet.machines[0]
    return (f"ssh -i {fleet.work / 'id_ed25519'} -o UserKnownHostsFile={fleet.work / 'known_hosts'} "
            f"-p {head.port} {login}@127.0.0.1")


def _forget(repo: Repository, launch_id: str) -> None:
    try:
        repo.remove_launch(launch_id)
    except NotFound:
        pass


def _alive(launch: Launch) -> int:
    """How many of a qemu launch's machines on this host are still running."""
    from rain.launch.local import running

    work = Path(str(launch.detail.get("work", "")))
    return sum(running(int(m.remote_id), work) for m in launch.machines if m.remote_id.isdigit())


def _log_dir() -> Path:
    """DATA_DIR/launch/logs/DATE-TIME-XXXX: this launch's console logs, kept if it fails."""
    logs = settings().data_path / "launch" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=logs))


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


# -- instances ---------------------------------------------------------------------------------


@instances_app.command("list")
def instances_list(
    everyone: bool = typer.Option(False, "--all", help="everyone's (administrators)"),
    as_json: bool = json_flag(),
) -> None:
    """Launches with machines on any target: who, which image, where, since when, until when."""
    launches = open_repo().launches(everyone)
    if as_json:
        print_json([launch.model_dump(mode="json") for launch in launches])
        return
    if not launches:
        console.print("no machines launched")
        return
    table = render.table("id", "owner", "image", "target", "machines", "state", "since", "until")
    for launch in launches:
        table.add_row(plain(launch.id), plain(launch.owner), plain(launch.image), plain(launch.target),
                      str(len(launch.machines)), _state(launch), render.when(launch.started),
                      render.when(launch.expires))
    console.print(table)


@instances_app.command("stop")
def instances_stop(
    launch_id: str = typer.Argument(None, help="id of the launch (see `fg-image instances list`)"),
    everything: bool = typer.Option(False, "--all", help="every launch of yours"),
) -> None:
    """Release a launch's machines and drop its record."""
    from rain.launch.local import release

    if (launch_id is None) == (not everything):
        raise InvalidInput("give a launch id or --all, not both" if launch_id else "give a launch id or --all",
                           hint="see `fg-image instances list`")
    repo = open_repo()
    me = repo.whoami().name
    if everything:
        targets = [launch for launch in repo.launches() if launch.owner == me]
    else:
        if not ID_RE.match(launch_id):
            raise InvalidInput(f"bad launch id {launch_id[:40]!r}", hint="ids are 12 hex digits; see "
                               "`fg-image instances list`")
        targets = [launch for launch in repo.launches(repo.whoami().role == Role.ADMIN) if launch.id == launch_id]
        if not targets:
            raise NotFound(f"no launch {launch_id}", hint="see `fg-image instances list`")
    for launch in targets:
        if launch.target == "qemu" and launch.host != HOST:
            raise InvalidInput(f"launch {launch.id} runs on host {launch.host}", hint="stop it there")
    for launch in targets:
        pids = [int(m.remote_id) for m in launch.machines if m.remote_id.isdigit()]
        logs = launch.detail.get("logs")
        alive = release(pids, Path(str(launch.detail.get("work", ""))), Path(logs) if isinstance(logs, str) else None)
        repo.remove_launch(launch.id)
        err_console.print(f"released launch {markup(launch.id)} ({alive} machine(s) were running)")


def _state(launch: Launch) -> str:
    if launch.target != "qemu" or launch.host != HOST:
        return "elsewhere" if launch.target == "qemu" else "recorded"
    alive = _alive(launch)
    return "running" if alive == len(launch.machines) else f"{alive} running" if alive else "gone"


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
    app.add_typer(instances_app, name="instances")
