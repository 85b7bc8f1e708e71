"""`fg-image repo ...` and `fg-image serve`: the repository itself."""

from __future__ import annotations

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
