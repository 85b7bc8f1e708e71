"""Builder commands: make/update the qemu builder image, check that a builder's machines come up."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from rain.cli.common import console, json_flag, open_repo, print_json, settings
from rain.cli.progress import step_reporter
from rain.errors import InvalidInput
from rain.generate.recipe import BuilderName

builder_app = typer.Typer(help="Builder VMs: the qemu builder image, checking a provider's settings.",
                          no_args_is_help=True)


@builder_app.command("image")
def image_cmd(
    rebuild: bool = typer.Option(False, "--rebuild", help="build a fresh builder image from its recipe "
                                                          "(e.g. after a Debian point release)"),
) -> None:
    """Make sure the qemu builder image is in the repository and prepared here; print its id."""
    from rain.generate.builders.qemu import QemuProvider

    provider = QemuProvider(settings(), open_repo())
    reporter = step_reporter()
    image_id = provider.ensure_image(reporter, rebuild=rebuild)
    provider.prepare(image_id, reporter)
    console.print(image_id)


@builder_app.command("check")
def check_cmd(
    name: BuilderName = typer.Argument(..., help="the builder whose machines to check (not local)"),
    as_json: bool = json_flag(),
) -> None:
    """Start one builder machine, log in over SSH (pinned host key), run `uname -sr`, delete it."""
    from rain.generate.builders.base import BuildSpec, get_builder

    if name is BuilderName.LOCAL:
        raise InvalidInput("the local builder has no machines to check", hint="check qemu, opennebula or openstack")
    builder = get_builder(name, settings(), open_repo() if name == "qemu" else None)
    with tempfile.TemporaryDirectory(prefix="rain-check-") as tmp:
        spec = BuildSpec(name=f"check-{name}", workdir=Path(tmp))
        t0 = time.monotonic()
        handle = builder.start(spec)
        try:
            up = time.monotonic() - t0
            kernel = builder.outside(handle, ["uname", "-sr"], what="uname").output.strip()
        finally:
            builder.stop(handle)
    if as_json:
        print_json({"builder": name, "seconds_to_ssh": round(up, 1), "kernel": kernel})
    else:
        console.print(f"{name}: builder machine answered over SSH after {up:.1f}s; {kernel}; deleted again")


def register(app: typer.Typer) -> None:
    app.add_typer(builder_app, name="builder")
