"""The cache group: cache list|prune (downloaded packages, base systems, finished results)."""

from __future__ import annotations

import typer

from rain.cli import render
from rain.cli.common import confirm, console, json_flag, print_json, settings, yes_flag
from rain.generate.cache import CacheKind
from rain.sizes import human

cache_app = typer.Typer(help="Local caches: downloaded packages, base systems, finished results, image chunks.",
                        no_args_is_help=True)


@cache_app.command("list")
def cache_list(as_json: bool = json_flag()) -> None:
    """Show cached packages, base systems and results with their sizes."""
    from rain.generate.cache import Cache

    entries = Cache.for_data(settings().data_path).entries()
    if as_json:
        print_json([{"kind": str(e.kind), "key": e.key, "path": str(e.path), "size": e.size,
                     "last_used": e.last_used, "detail": e.detail} for e in entries])
        return
    render.cache_table(entries, settings().data_path / "cache")


@cache_app.command("prune")
def cache_prune(
    kind: list[CacheKind] = typer.Option([], "--kind", help="only this kind; repeatable (default: all)"),
    older_than: float = typer.Option(None, "--older-than", help="only entries unused for this many days"),
    yes: bool = yes_flag(),
) -> None:
    """Remove cache entries (all, or of a kind, or unused for a while)."""
    from rain.generate.cache import Cache

    what = ", ".join(kind) or "all caches"
    age = f" unused for {older_than:g} days" if older_than is not None else ""
    if not yes:
        confirm(f"remove {what}{age} under {settings().data_path / 'cache'}?", f"removing {what}{age}")
    gone = Cache.for_data(settings().data_path).prune(kind or None,
                                                      None if older_than is None else older_than * 86400)
    console.print(f"removed {len(gone)} entries, {human(sum(e.size for e in gone))}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
