"""`fg-image config show`: the effective settings and where each came from."""

from __future__ import annotations

import typer

from rain.cli import render
from rain.cli.common import console, json_flag, print_json, settings

config_app = typer.Typer(help="Rain's settings.", no_args_is_help=True)


@config_app.command("show")
def show(as_json: bool = json_flag()) -> None:
    """Print every setting, its value (secrets redacted) and its source."""
    s = settings()
    rows = s.shown()
    if as_json:
        print_json({"config_file": str(s.config_file), "settings": [
            {"name": n, "value": v, "source": src} for n, v, src in rows]})
        return
    console.print(f"config file: {s.config_file}" + ("" if s.config_file.is_file() else " (absent)"))
    table = render.table("setting", "value", "source")
    for name, value, source in rows:
        table.add_row(name, value or "-", source)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
