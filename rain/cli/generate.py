"""The generate commands: generate, lock, rebuild and batch. Parse, call rain.generate, render."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from rain.cli import render
from rain.cli.common import console, err_console, interrupted_as, json_flag, open_repo, print_json, settings
from rain.cli.failures import file_failure
from rain.cli.progress import step_reporter
from rain.errors import BuildError, ExitCode, InvalidInput, RecipeError
from rain.generate.build import BuildOptions, BuildResult, generate, needs_repository
from rain.generate.loader import load_recipe, parse_overrides
from rain.generate.lock import lock_path, write_lock
from rain.generate.recipe import BuilderName, Format

commands = typer.Typer()  # top-level commands: `fg-image generate`, not a group


def _sets(set_: list[str], formats: list[Format]) -> dict[str, Any]:
    sets = parse_overrides(set_)
    if formats:
        sets["formats"] = [f.value for f in formats]
    return sets


class OnError(StrEnum):
    """What a failed build does with its builder VM. The core takes it as BuildOptions.on_error_keep."""

    REMOVE = "remove"
    KEEP = "keep"


BUILDER_HELP = "where builds run: local is a chroot here, the others builder VMs; default: the recipe's, else local"
ON_ERROR_HELP = "keep leaves a failed builder VM running for inspection"


def _builder_options(builder: BuilderName | None, on_error: OnError) -> dict[str, Any]:
    return {"builder": builder.value if builder else None, "on_error_keep": on_error is OnError.KEEP}


@commands.command("generate")
def generate_cmd(
    recipe: Path = typer.Argument(..., help="recipe file (YAML)"),
    set_: list[str] = typer.Option([], "--set", help="override a field: --set os.release=trixie; repeatable"),
    format_: list[Format] = typer.Option([], "--format", help="an artifact to make; repeatable"),
    output: Path = typer.Option(None, "--output", "-o", help="also copy the artifacts and manifest.json here"),
    no_upload: bool = typer.Option(False, "--no-upload", help="build only; do not store in the repository"),
    no_cache: bool = typer.Option(False, "--no-cache", help="ignore cached bases and results (packages stay)"),
    as_json: bool = json_flag(),
    builder: BuilderName = typer.Option(None, "--builder", "-b", help=BUILDER_HELP),
    on_error: OnError = typer.Option(OnError.REMOVE, "--on-error", help=ON_ERROR_HELP),
    lock: bool = typer.Option(False, "--lock", help="write RECIPE.lock: the exact packages of this build"),
) -> None:
    """Build an image from a recipe and print the new image id(s). A RECIPE.lock beside it pins every package."""
    loaded = load_recipe(recipe, _sets(set_, format_))
    if lock and loaded.lock_note:  # a lock of another OS is there: --lock would replace it unasked
        raise RecipeError(f"--lock: {loaded.lock_note}",
                          hint=f"`fg-image lock --update {recipe}` writes it again, for this build's OS")
    options = BuildOptions(output=output, use_cache=not no_cache, upload=not no_upload,
                           **_builder_options(builder, on_error))
    repo = open_repo() if needs_repository(loaded.recipe, options) else None
    with interrupted_as("build interrupted", "its mounts and temporary files were removed"):
        result = generate(loaded, settings(), options, step_reporter(), repo)
    if lock:
        _write_lock(recipe, result)
    _print_result(result, as_json)


@commands.command("lock")
def lock_cmd(
    recipe: Path = typer.Argument(..., help="recipe file (YAML)"),
    update: bool = typer.Option(False, "--update", help="write it again though RECIPE.lock exists"),
    set_: list[str] = typer.Option([], "--set", help="override a field: --set os.release=trixie; repeatable"),
    builder: BuilderName = typer.Option(None, "--builder", "-b", help=BUILDER_HELP),
) -> None:
    """Write RECIPE.lock from a build of the recipe that ignores the lock there (nothing is uploaded)."""
    path = lock_path(recipe)
    if path.exists() and not update:
        raise InvalidInput(f"{path} exists", hint=f"`fg-image lock --update {recipe}` writes it again from a new build")
    loaded = load_recipe(recipe, parse_overrides(set_), use_lock=False)
    options = BuildOptions(upload=False, **_builder_options(builder, OnError.REMOVE))
    with interrupted_as("build interrupted", "its mounts and temporary files were removed"):
        result = generate(loaded, settings(), options, step_reporter(), None)
    _write_lock(recipe, result)


def _write_lock(recipe: Path, result: BuildResult) -> None:
    path = lock_path(recipe)
    try:
        write_lock(path, result.manifest, result.name)
    except OSError as e:
        raise file_failure(e, path, "write the lock file") from None
    err_console.print(f"wrote {path} ({len(result.manifest['packages'])} packages)")


def _print_result(result: BuildResult, as_json: bool) -> None:
    if as_json:
        print_json({"name": result.name, "recipe_hash": result.recipe_hash, "cached": result.cached,
                    "directory": str(result.directory), "image_ids": result.image_ids,
                    "artifacts": [{"format": str(a.format), "path": str(a.path), "size": a.size,
                                   "sha256": a.sha256} for a in result.artifacts],
                    "output_files": [str(p) for p in result.output_files]})
        return
    if result.image_ids:
        if len(result.image_ids) == 1:
            console.print(next(iter(result.image_ids.values())))
        else:
            for fmt, image_id in result.image_ids.items():
                console.print(f"{image_id}  {fmt}")
        return
    for path in result.output_files or tuple(a.path for a in result.artifacts):
        console.print(str(path))


@commands.command("rebuild")
def rebuild_cmd(
    image_id: str = typer.Argument(..., help="a stored image that `fg-image generate` made"),
    builder: BuilderName = typer.Option(None, "--builder", "-b", help=BUILDER_HELP),
    recipe_dir: Path = typer.Option(None, "--recipe-dir", help="where the files the recipe refers to are "
                                    "(the original recipe's directory); default: here"),
    mirror: str = typer.Option(None, "--mirror", help="build from this mirror (a snapshot mirror that still has "
                               "the versions); default: the one the image was built from"),
    as_json: bool = json_flag(),
) -> None:
    """Build a stored image again from its provenance and say whether the bytes are the same (exit 14 if not).
    The outcome is recorded on the image."""
    from rain.rebuild import rebuild

    repo = open_repo()
    image = repo.show(image_id)
    with interrupted_as("rebuild interrupted", "its mounts and temporary files were removed"):
        outcome = rebuild(image, repo, settings(), step_reporter(), builder.value if builder else None,
                          recipe_dir, mirror)
    repo.add_reproduction(image.id, outcome.record())
    if as_json:
        print_json({"image_id": image.id, **outcome.record(), "stored_sha256": outcome.stored_sha256})
    elif outcome.identical:
        console.print(f"reproduced: the rebuild of {image.id} ({outcome.format}, {outcome.builder} builder) has "
                      f"the same sha256 {outcome.rebuilt_sha256}")
    else:
        console.print(f"not reproduced: the rebuild of {image.id} ({outcome.format}, {outcome.builder} builder) has "
                      f"sha256 {outcome.rebuilt_sha256}, the stored image {outcome.stored_sha256}")
        shown = outcome.record()  # the lines as recorded: an image's names may hold control characters
        for line in [*shown["differences"], *([shown["note"]] if shown["note"] else [])]:
            console.print(f"  {line}", markup=False, highlight=False)
    if not outcome.identical:
        raise typer.Exit(ExitCode.NOT_REPRODUCED)


@commands.command("batch")
def batch_cmd(
    file: Path = typer.Argument(..., help="batch file (YAML): recipes and/or a matrix"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=32, help="builds at once"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate everything and show what would be built"),
    keep_going: bool = typer.Option(False, "--keep-going", help="go on after a failed build"),
    set_: list[str] = typer.Option([], "--set", help="override a field in every recipe; repeatable"),
    format_: list[Format] = typer.Option([], "--format", help="formats for every recipe; repeatable"),
    output: Path = typer.Option(None, "--output", "-o", help="also copy each build's files to DIR/IMAGE-NAME/"),
    no_upload: bool = typer.Option(False, "--no-upload", help="build only"),
    no_cache: bool = typer.Option(False, "--no-cache", help="ignore cached bases and results"),
    as_json: bool = json_flag(),
    builder: BuilderName = typer.Option(None, "--builder", "-b", help=BUILDER_HELP),
    on_error: OnError = typer.Option(OnError.REMOVE, "--on-error", help=ON_ERROR_HELP),
) -> None:
    """Build every recipe of a batch file; ends with a table of each image and its outcome."""
    from rain.generate.batch import load_batch, run_batch

    items = load_batch(file, _sets(set_, format_))
    options = BuildOptions(output=output, use_cache=not no_cache, upload=not no_upload and not dry_run,
                           **_builder_options(builder, on_error))
    needs_repo = any(needs_repository(i.loaded.recipe, options) for i in items)
    t0 = time.monotonic()
    with interrupted_as("build interrupted", "its mounts and temporary files were removed"):
        outcomes = run_batch(items, settings(), options, step_reporter(), jobs=jobs, keep_going=keep_going,
                             dry_run=dry_run, repo_factory=open_repo if needs_repo else None)
    if as_json:
        print_json([{"entry": o.label, "name": o.name, "status": o.status, "seconds": o.seconds,
                     "base": o.base, "image_ids": o.image_ids, "error": o.error} for o in outcomes])
    else:
        render.batch_table(f"{file.name}: {len(outcomes)} builds in {time.monotonic() - t0:.0f}s", outcomes)
    failed = [o for o in outcomes if o.status in ("failed", "skipped")]
    if failed:
        raise BuildError(f"{len(failed)} of {len(outcomes)} builds did not finish",
                         hint="see the table above; --keep-going builds the rest after a failure")


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
