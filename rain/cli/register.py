"""Register commands: register, vet, registrations, deregister."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from rain.cli import render
from rain.cli.common import confirm, console, json_flag, open_repo, print_json, settings, yes_flag
from rain.cli.failures import FILE_ERRNOS, file_failure
from rain.cli.progress import step_reporter
from rain.cli.untrusted import markup, plain, visible
from rain.errors import InvalidInput
from rain.register.models import Outcome, UnpackFormat, VetReport
from rain.register.targets.base import TargetName
from rain.repository.models import ID_RE


def render_report(report: VetReport) -> None:
    colour = "green" if report.verdict == "pass" else "red"
    console.print(f"[{colour}]{markup(report.verdict.upper())}[/{colour}] {markup(report.subject)} — target "
                  f"{markup(report.target or '(none)')}, policy {markup(report.policy)}, "
                  f"blocks at {markup(report.block_at)}")
    if not report.findings:
        console.print("no findings")
        return
    table = render.table("rule", "severity", "", "what", "fix", "where")
    for f in report.findings:
        state = "accepted" if f.accepted else ("BLOCKS" if f.blocking else "")
        # findings quote what the image holds: file names and contents its author chose
        table.add_row(plain(f.rule), plain(f.severity), state, plain(f.message), plain(f.hint),
                      Text("\n".join(visible(p) for p in f.paths[:5])))
    console.print(table)


commands = typer.Typer()  # top-level commands: `fg-image register`, not a group


@commands.command("register")
def register_cmd(
    image_id: str = typer.Argument(..., help="id of the image in the repository"),
    target: TargetName = typer.Option(..., "--target", "-t", help="where to publish the image"),
    site: str = typer.Option(None, "--site", help="site name in the targets file (default: the only one / default)"),
    boot_test: bool = typer.Option(False, "--boot-test", help="boot the result under QEMU before publishing "
                                   "(or writing --output); a failed boot publishes nothing"),
    boot_timeout: float = typer.Option(600.0, "--boot-timeout", min=1, help="seconds the boot test may take"),
    output: Path = typer.Option(None, "--output", "-o", help="write the packed image here instead of publishing "
                                "it (a file; a directory for hpc); no site or credentials needed"),
    force: bool = typer.Option(False, "--force", help="with --output: replace what is already there"),
    share_with: list[str] = typer.Option([], "--share-with-project", metavar="PROJECT_ID",
                                         help="openstack: make this project a member of the image "
                                              "(repeatable; the image is then `shared`)"),
    as_json: bool = json_flag(),
) -> None:
    """Vet an image, adapt a copy for a target, publish it there and record the registration
    (or, with --output, write the copy to a file and note the export in the history)."""
    from rain.register.pipeline import VetRejected, register

    if force and output is None:
        raise InvalidInput("--force applies to --output", hint="give --output PATH, or drop --force")
    repo = open_repo()
    try:
        outcome = register(repo, settings(), image_id, target.value, site, boot_test, step_reporter(), boot_timeout,
                           output, force, share_with)
    except VetRejected as e:
        render_report(e.report)
        raise
    except OSError as e:
        if output is None or e.errno not in FILE_ERRNOS:
            raise
        raise file_failure(e, e.filename or output) from e
    if outcome.output is not None:
        _print_export(image_id, outcome, as_json)
    elif as_json:
        print_json({"target": outcome.target, "site": outcome.site, "remote_id": outcome.remote_id,
                    "derived_image": outcome.derived_id, "changes": outcome.changes, "timings": outcome.timings,
                    "vetting": outcome.report.model_dump(mode="json")})
    else:
        console.print(plain(f"registered {image_id} on {outcome.target}/{outcome.site} as {outcome.remote_id} "
                            f"(derived image {outcome.derived_id})"))


def _print_export(image_id: str, outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print_json({"target": outcome.target, "site": outcome.site, "output": str(outcome.output),
                    **outcome.detail, "vetting": outcome.report.model_dump(mode="json")})
    else:
        console.print(plain(f"wrote {image_id} for {outcome.target} to {outcome.output} "
                            f"({', '.join(outcome.detail['files'])})"))


@commands.command("vet")
def vet_cmd(
    subject: str = typer.Argument(..., help="image id in the repository, or a local image file / root directory"),
    target: TargetName = typer.Option(None, "--target", "-t", help="vet under this target's policy"),
    format: UnpackFormat = typer.Option(None, "--format", help="format of a local file (default: from its name)"),
    accept: str = typer.Option(None, "--accept", help="admin: accept RULE for this image and target, then vet"),
    as_json: bool = json_flag(),
) -> None:
    """Vet an image and print the report; exit code 11 when the verdict is fail."""
    from rain.register.pipeline import VetRejected, vet_image, vet_path

    path = Path(subject)
    if path.exists() and not ID_RE.match(subject):
        if accept:
            raise InvalidInput("--accept applies to repository images", hint="give an image id")
        report = vet_path(path, target.value if target else None, format.value if format else None,
                          step_reporter(), settings().unpack_max)
    elif ID_RE.match(subject):
        repo = open_repo()
        if accept:
            if not target:
                raise InvalidInput("--accept needs --target", hint="a rule is accepted for one image and target")
            repo.accept_rule(subject, target.value, accept)
        report = vet_image(repo, subject, target.value if target else None, settings(), step_reporter())
    else:
        raise InvalidInput(f"{subject!r} is neither an image id nor an existing file or directory",
                           hint="give a 12-character image id or a path")
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        render_report(report)
    if report.verdict != "pass":
        raise VetRejected(report, hint="each finding above says how to fix it")


@commands.command("registrations")
def registrations_cmd(
    image_id: str = typer.Argument(...),
    as_json: bool = json_flag(),
) -> None:
    """List where an image is registered."""
    image = open_repo().show(image_id)
    if as_json:
        print_json([r.model_dump(mode="json") for r in image.registrations])
        return
    if not image.registrations:
        console.print(plain(f"{image_id} is not registered anywhere"))
        return
    render.registrations_table(image.registrations)


@commands.command("deregister")
def deregister_cmd(
    image_id: str = typer.Argument(...),
    target: TargetName = typer.Option(..., "--target", "-t", help="the target to delete the image from"),
    site: str = typer.Option(None, "--site", help="only this site (default: every site of the target)"),
    yes: bool = yes_flag(),
) -> None:
    """Delete the image from a target and drop its registration record."""
    from rain.register.pipeline import deregister

    where = target.value + (f"/{site}" if site else " (every site)")
    if not yes:
        confirm(visible(f"delete image {image_id} from {where}?"), f"deleting image {image_id} from {where}")
    deregister(open_repo(), settings(), image_id, target.value, site)
    console.print(plain(f"deregistered {image_id} from {where}"))


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
