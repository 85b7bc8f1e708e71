"""`fg-image launch`: N machines from a stored disk image, a job on them, its results back, the machines gone."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import typer

from rain.cli.common import err_console, open_repo, settings
from rain.cli.images import fetch_image
from rain.cli.untrusted import checked_id, markup
from rain.errors import InvalidInput
from rain.repository.base import Repository
from rain.repository.models import ID_RE, Image

commands = typer.Typer()

DISK_FORMATS = ("qcow2", "raw")
DEFAULT_USERS = {"debian": "debian", "ubuntu": "ubuntu", "rocky": "rocky", "alma": "almalinux",
                 "centos": "cloud-user", "fedora": "fedora"}
"""The default user each family's cloud images let in (what cloud-init makes from its system_info)."""


@commands.command("launch")
def launch(
    image_id: str = typer.Argument(..., help="id of a bootable disk image (qcow2 or raw) in the repository"),
    target: str = typer.Option("qemu", "--target", "-t", help="where the machines run: qemu (this host)"),
    count: int = typer.Option(1, "--count", "-n", min=1, help="how many machines"),
    run: Path = typer.Option(..., "--run", help="script to run on the first machine (the head)"),
    upload: Path = typer.Option(None, "--upload", help="directory whose contents go to ~/job on every machine"),
    download: str = typer.Option(None, "--download", help="directory under the head's ~/job to bring back "
                                 "(into a local directory of the same name)"),
    user: str = typer.Option(None, "--user", help="user to log in as (default: the family's cloud user)"),
    memory: int = typer.Option(1024, "--memory", min=256, help="MiB of RAM per machine"),
    accel: str = typer.Option("tcg", "--accel", help="tcg (works everywhere) or kvm"),
    boot_timeout: float = typer.Option(900.0, "--boot-timeout", min=1, help="seconds for all machines to "
                                       "answer SSH"),
) -> None:
    """Start machines from an image, run SCRIPT on the head with the machines file's path in
    RAIN_MACHINES, bring --download back, and release every machine (also on failure and Ctrl-C).
    The exit code is the script's."""
    from rain.host.ssh import KeyPair
    from rain.launch.job import Job, remote_dir
    from rain.launch.local import LocalSite
    from rain.register.seeds import username

    if target != "qemu":
        raise InvalidInput(f"launch on {target!r} is not available yet", hint="use --target qemu (this host)")
    if not ID_RE.match(image_id):
        raise InvalidInput(f"bad image id {image_id[:40]!r}", hint="ids are 12 hex digits; see `fg-image list`")
    if not run.is_file():
        raise InvalidInput(f"--run {run}: no such file", hint="give the script to run on the head")
    if upload is not None and not upload.is_dir():
        raise InvalidInput(f"--upload {upload}: no such directory", hint="give a directory to copy to each machine")
    wanted = remote_dir(download) if download is not None else None
    if download is not None and Path(download).exists():
        raise InvalidInput(f"--download {download}: {download} is already here",
                           hint="move it away or remove it first: the results come back as a new directory")
    repo = open_repo()
    image = repo.show(image_id)
    checked_id(image.id, image_id)
    if image.format not in DISK_FORMATS:
        raise InvalidInput(f"image {image.id} is {image.format}, not a bootable disk",
                           hint="launch a qcow2 or raw image: generate the recipe with --format qcow2")
    login = username(user or DEFAULT_USERS.get(image.os.family.lower(), "root"))
    disk = _cached_disk(repo, image)
    key = KeyPair.generate(f"rain-launch@{image.id}")
    site = LocalSite(disk, image.format, login, memory_mb=memory, accel=accel,
                     logs=_log_dir())

    def progress(line: str) -> None:
        err_console.print(markup(line))

    with site.machines(count, key, boot_timeout, report=progress) as machines:
        with Job(machines, login, key) as job:
            job.prepare(upload)
            progress(f"running {run.name} on {machines[0].name}")
            status = job.run(run, _out)
            if wanted is not None:
                files = job.download(wanted, Path(download))
                progress(f"{files} file(s) back in {download}/")
        progress(f"released {len(machines)} machine(s)")
    raise typer.Exit(status)


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
    if not disk.is_file() or disk.stat().st_size != image.size:
        fetch_image(repo, image, disk)
    return disk


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
