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

builder_app = typer.Typer(help="Builder VMs: the qemu builder image, checking a provider's settings, "
                               "deleting what a killed fg-image left.",
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
        spec = BuildSpec(name=f"check-{name}", workdir=Path(tmp), reporter=step_reporter())
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


@builder_app.command("reap")
def reap_cmd(
    name: BuilderName = typer.Argument(..., help="the cloud builder whose leftover machines to delete"),
) -> None:
    """Delete the cloud builder machines of builds whose fg-image was killed (its next build does it too)."""
    from rain.errors import BuildError
    from rain.generate.builders.base import get_provider

    if name in (BuilderName.LOCAL, BuilderName.QEMU):
        raise InvalidInput(f"the {name.value} builder leaves no machines behind: a killed fg-image's qemu VMs "
                           "die with it", hint="reap opennebula or openstack")
    lines = get_provider(name, settings()).reap()
    for line in lines:
        console.print(line)
    if not lines:
        console.print(f"{name.value}: no machines left by a killed fg-image on this host")
    if any(line.startswith("could not") for line in lines):
        raise BuildError(f"some {name.value} builder machines could not be deleted", hint="see the lines above")


def register(app: typer.Typer) -> None:
    app.add_typer(builder_app, name="builder")
