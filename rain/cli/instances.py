"""`fg-image instances`: what a user has running from `fg-image launch` on any target (the repository's
launch records), released by `stop`; and `reap`, which releases what a killed launch left on a cloud."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rain.cli import render
from rain.cli.common import console, err_console, json_flag, open_repo, print_json, settings
from rain.cli.untrusted import markup, plain
from rain.errors import ExitCode, Forbidden, InvalidInput, NotFound, RainError
from rain.launch import records
from rain.repository.acting import HOST
from rain.repository.base import Repository
from rain.repository.models import ID_RE, Launch, Role

if TYPE_CHECKING:
    from rain.launch.cloud import CloudSite

instances_app = typer.Typer(help="Machines you launched: list them, stop them, reap what a killed launch left.",
                            no_args_is_help=True)


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
    if (launch_id is None) == (not everything):
        raise InvalidInput("give a launch id or --all, not both" if launch_id else "give a launch id or --all",
                           hint="see `fg-image instances list`")
    repo = open_repo()
    me = repo.whoami().name
    if everything:
        for line in reap_leftovers(repo, _say):
            _say(line)
        targets = [launch for launch in repo.launches() if launch.owner == me]
    else:
        if not ID_RE.match(launch_id):
            raise InvalidInput(f"bad launch id {launch_id[:40]!r}", hint="ids are 12 hex digits; see "
                               "`fg-image instances list`")
        targets = [launch for launch in repo.launches(repo.whoami().role == Role.ADMIN) if launch.id == launch_id]
        if not targets:
            raise NotFound(f"no launch {launch_id}", hint="see `fg-image instances list`")
    sites: dict[tuple[str, str], CloudSite] = {}
    for launch in targets:
        if launch.target in records.LOCAL_TARGETS and launch.host != HOST:
            if not everything:
                raise InvalidInput(f"launch {launch.id} runs on host {launch.host}", hint="stop it there")
            err_console.print(f"skipped launch {markup(launch.id)}: it runs on host {markup(launch.host)}")
            continue
        if launch.target not in records.LOCAL_TARGETS and launch.owner != me:
            raise Forbidden(f"launch {launch.id} is {launch.owner}'s, on {launch.target}: only their credentials "
                            "reach its machines",
                            hint=f"ask {launch.owner} to run `fg-image instances stop {launch.id}`")
        try:
            killed = release(repo, launch, sites)
        except RainError as e:
            if not everything:
                raise
            err_console.print(f"warning: launch {markup(launch.id)} stays: {markup(e.message)}")
            continue
        err_console.print(f"released launch {markup(launch.id)} ({killed} machine(s) were running)")


def release(repo: Repository, launch: Launch, sites: dict[tuple[str, str], CloudSite] | None = None) -> int:
    """Release a launch's machines (on this host, or through its cloud's API) and drop its record; how many
    machines were running. `sites`: the cloud sites opened so far by this command (each logs in once)."""
    from rain.launch.cloud import CLOUDS, open_site

    killed = records.release(launch, logs_root())
    if launch.target in CLOUDS:
        sites = {} if sites is None else sites
        where = (launch.target, launch.site)
        if where not in sites:
            sites[where] = open_site(settings(), launch.target, launch.site, None, None)
        killed += sites[where].release(launch)
    repo.remove_launch(launch.id)
    return killed


def release_leftovers(repo: Repository, progress: Callable[[str], None]) -> None:
    """What a launch does first: release what killed launches left on clouds (if the watcher could not),
    and this user's launches past launch_lifetime (a local machine's own `timeout` has ended it already;
    a cloud's runs until Rain deletes it)."""
    for line in reap_leftovers(repo, progress):
        progress(line)
    me, now = repo.whoami().name, datetime.now(UTC)
    sites: dict[tuple[str, str], CloudSite] = {}
    for launch in repo.launches():
        if launch.owner != me or launch.expires is None or launch.expires > now or \
                (launch.target in records.LOCAL_TARGETS and launch.host != HOST):
            continue
        try:
            killed = release(repo, launch, sites)
        except RainError as e:
            progress(f"warning: launch {launch.id}'s lifetime has ended but it could not be released: {e.message}")
            continue
        progress(f"released launch {launch.id}: its lifetime ended {render.when(launch.expires)} "
                 f"({killed} machine(s) were running)")


def _state(launch: Launch) -> str:
    """qemu: how many of its machines run here; a cloud's: what the record says (Rain does not ask the cloud)."""
    if launch.target not in records.LOCAL_TARGETS or launch.host != HOST:
        return "elsewhere" if launch.target in records.LOCAL_TARGETS else "recorded"
    alive = records.alive(launch)
    return "running" if alive == len(launch.machines) else f"{alive} running" if alive else "gone"


@instances_app.command("reap")
def instances_reap() -> None:
    """Release what launches on a cloud left when their fg-image was killed, and drop their records. Rain's
    watcher runs this as soon as such an fg-image is gone; the next launch does it too."""
    lines = reap_leftovers(open_repo(), _say)
    for line in lines:
        _say(line)
    if not lines:
        _say("no machines left by a killed launch on this host")
    if any(line.startswith("could not") for line in lines):
        raise typer.Exit(ExitCode.TARGET)


def reap_leftovers(repo: Repository, progress: Callable[[str], None]) -> list[str]:
    """Release what this host's killed cloud launches left (launch/cloud.py) and drop their records."""
    from rain.launch.cloud import reap

    return reap(settings(), lambda launch_id: forget(repo, launch_id, progress))


def _say(line: str) -> None:
    err_console.print(markup(line))


def forget(repo: Repository, launch_id: str, progress: Callable[[str], None]) -> None:
    """Drop a released launch's record; a failure to do so is a warning, not the launch's outcome."""
    try:
        repo.remove_launch(launch_id)
    except NotFound:
        pass
    except RainError as e:
        progress(f"warning: launch {launch_id}'s record stays ({e.message}); `fg-image instances stop "
                 f"{launch_id}` drops it")


def logs_root() -> Path:
    return settings().data_path / "launch" / "logs"


def register(app: typer.Typer) -> None:
    app.add_typer(instances_app, name="instances")
