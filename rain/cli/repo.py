"""`fg-image repo ...` and `fg-image serve`: the repository itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from rain.cli.common import console, json_flag, open_repo, print_json, settings
from rain.cli.untrusted import markup
from rain.repository import embedded, embedded_disk
from rain.sizes import human

repo_app = typer.Typer(help="The repository database: status, stop, garbage collection.",
                       no_args_is_help=True)
commands = typer.Typer()  # top-level: `fg-image serve`


@repo_app.command("status")
def status(as_json: bool = json_flag()) -> None:
    """Where the repository is and whether it answers."""
    s = settings()
    if s.repo_url:
        from rain.repository.client import Client

        health = Client(s.repo_url, s.token, s.timeout).healthz()
        info = {"mode": "remote", "url": s.repo_url, **health}
    elif s.mongo_uri:
        from rain.repository.connect import open_database

        open_database(s)
        info = {"mode": "mongodb", "uri": dict((k, v) for k, v, _ in s.shown())["mongo_uri"], "status": "ok"}
    else:
        from rain.repository.connect import embedded_health

        st, state = embedded_health(s)
        free = embedded_disk.free_bytes(st.data_dir)
        info = {"mode": "embedded", "running": st.running, "state": state, "pid": st.pid, "port": st.port,
                "uri": st.shown_uri, "auth": (st.credential is not None) if st.running else None,
                "data": str(st.data_dir), "free": free, "free_human": human(free, none="unknown"), "log": str(st.log)}
        if state not in ("ok", "stopped"):
            info["hint"] = embedded_disk.recovery_hint(st.data_dir)
    if info.get("status", info.get("state")) in ("ok", "low on disk space"):
        info.update(_storage())
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        console.print(f"[bold]{markup(key)}[/bold]: {markup(value if value is not None else '-')}")  # a service's words


def _storage() -> dict[str, object]:
    """Logical and stored bytes and the dedup ratio, for an administrator; nothing for other users."""
    from rain.errors import Forbidden

    try:
        report = open_repo().storage()
    except Forbidden:
        return {}
    return {"images": report.images, "logical": human(report.logical_bytes), "stored": human(report.stored_bytes),
            "dedup_ratio": report.dedup_ratio, "logical_bytes": report.logical_bytes,
            "stored_bytes": report.stored_bytes, "chunks": report.chunks}


@repo_app.command("stop")
def stop() -> None:
    """Stop the embedded repository server (data is kept; the next command starts it again)."""
    if embedded.stop(settings().data_path):
        console.print("stopped the embedded repository server")
    else:
        console.print("the embedded repository server was not running")


@repo_app.command("gc")
def gc(as_json: bool = json_flag()) -> None:
    """Collect abandoned uploads and bytes no image refers to (administrators)."""
    report = open_repo().gc()
    if as_json:
        print_json(report)
    else:
        console.print(f"removed {report.uploads_removed} abandoned upload(s), {report.chunks_removed} "
                      f"chunk(s), {report.files_removed} stray file(s); corrected {report.counts_corrected} "
                      f"reference count(s); freed {human(report.bytes_freed)}")


@repo_app.command("pull")
def pull(
    ids: list[str] = typer.Argument(None, help="ids of images to pull (their parents come too)"),
    source: str = typer.Option(..., "--from", help="the source repository service, e.g. https://repo.example:8780"),
    token: str = typer.Option(None, "--token", envvar="RAIN_PULL_TOKEN", show_envvar=True,
                              help="a token of the source repository (default: none, public images only)"),
    name: str = typer.Option(None, "--name", help="also every image of this name the source lists"),
    os_family: str = typer.Option(None, "--os", help="also every image of this OS family"),
    owner: str = typer.Option(None, "--owner", help="also every image of this owner"),
    tag: str = typer.Option(None, "--tag", help="also every image with this tag"),
    every: bool = typer.Option(False, "--all", help="every image the token may read there"),
    as_json: bool = json_flag(),
) -> None:
    """Copy images from another Rain repository into this one, moving only the chunks it lacks
    (administrators; run it where this repository's database is)."""
    from pydantic import ValidationError

    from rain.cli.images import invalid
    from rain.errors import InvalidInput
    from rain.repository.models import ImageQuery
    from rain.repository.pull import Pulled, SourceClient, plan
    from rain.repository.pull import pull as run
    from rain.repository.store import Store

    filters = {"name": name, "os_family": os_family, "owner": owner, "tag": tag}
    if not ids and not every and not any(filters.values()):
        raise InvalidInput("name the images to pull", hint="give ids, a filter (--name, --os, --owner, --tag) "
                           "or --all")
    try:
        query = ImageQuery(name=name, os_family=os_family, owner=owner, tag=tag) \
            if every or any(filters.values()) else None
    except ValidationError as e:
        raise invalid(e) from None
    repo = open_repo()
    if not isinstance(repo, Store):
        raise InvalidInput("repo pull writes into a repository database, and this command is set to use the "
                           f"service at {settings().repo_url}", hint="run it on the machine of that service's "
                           "database (without --repo / RAIN_REPO_URL), as an administrator")
    s = settings()
    client = SourceClient(source, token, s.timeout)

    def said(p: Pulled) -> None:
        if as_json:
            return
        if p.outcome == "present":
            console.print(f"{p.id} {markup(p.name)}: here already")
            return
        extra = " (resumed)" if p.resumed else ""
        if p.created_owner:
            extra += f"; made an account for its owner {markup(p.owner)} (no tokens)"
        console.print(f"pulled {p.id} {markup(p.name)} ({human(p.size)}): fetched {human(p.fetched_bytes)}, "
                      f"{human(p.size - min(p.size, p.fetched_bytes))} already here{extra}")

    report = run(repo, client, plan(client, ids or [], query), said)
    if as_json:
        print_json({**dataclasses.asdict(report), "fetched_bytes": report.fetched_bytes})
    elif not report.images:
        console.print("nothing to pull: the source lists no such image for this token")


@commands.command("serve")
def serve(
    host: str = typer.Option(None, "--host", help="address to listen on (default 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="port (default 8780)"),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate chain for HTTPS"),
    tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key for HTTPS"),
) -> None:
    """Run the shared repository service (REST API under /api/v1)."""
    from rain.repository.server import serve as run

    s = settings()
    host = host or s.serve_host
    port = port if port is not None else s.serve_port
    scheme = "https" if tls_cert else "http"
    console.print(f"serving the Rain repository on {scheme}://{host}:{port} (API at /api/v1, docs at /api/v1/docs)")
    run(s, host, port, tls_cert, tls_key)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
    app.add_typer(commands)
