"""Image commands: upload, download, list, show, modify, remove, share, unshare, history."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from rain.cli import render
from rain.cli.common import confirm, console, json_flag, open_repo, print_json, settings, yes_flag
from rain.cli.failures import FILE_ERRNOS, file_failure
from rain.cli.progress import transfer
from rain.cli.untrusted import checked_id, local_file_name, plain, visible
from rain.digests import sha256_of
from rain.errors import Conflict, IntegrityError, InvalidInput
from rain.host.files import replace_file
from rain.image import sbom
from rain.repository.base import Repository
from rain.repository.models import (
    ID_RE,
    Image,
    ImageChanges,
    ImageMeta,
    ImageQuery,
    OsInfo,
    Status,
    Verdict,
    Visibility,
    field_path,
)
from rain.sizes import human

commands = typer.Typer()  # top-level commands: `fg-image upload`, not a group


def invalid(e: ValidationError) -> InvalidInput:
    """The first pydantic complaint as a one-line Rain error naming the field."""
    first = e.errors()[0]
    field = field_path(first["loc"]) or "value"
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidInput(f"{field}: {message}")


@commands.command("upload")
def upload(
    path: Path = typer.Argument(..., help="image file to upload"),
    name: str = typer.Option(None, "--name", help="image name (default: the file name)"),
    os_family: str = typer.Option("", "--os", help="OS family, e.g. debian, rocky"),
    release: str = typer.Option("", "--release", help="OS release, e.g. bookworm, 9"),
    arch: str = typer.Option("", "--arch", help="architecture, e.g. amd64, arm64"),
    format: str = typer.Option(None, "--format", help="raw, qcow2, tar.zst, squashfs, ... (default: from the suffix)"),
    tag: list[str] = typer.Option([], "--tag", help="a tag; repeat for more"),
    description: str = typer.Option("", "--description", help="free text"),
    public: bool = typer.Option(False, "--public", help="readable by every user"),
    parent: str = typer.Option(None, "--parent", help="id of the image this one was made from (its lineage)"),
    bases: list[str] = typer.Option([], "--base", help="id of an image this one shares much with: its chunks "
                                    "are not sent again; repeat for more (the parent always counts)"),
    manifest: Path = typer.Option(None, "--manifest", help="the manifest.json `generate --no-upload -o DIR` "
                                  "wrote beside the file: stored as its provenance (package list, recipe)"),
    as_json: bool = json_flag(),
) -> None:
    """Store an image file in the repository and print its id.

    Through a service, only the chunks the repository lacks travel: those not in the parent, the
    --base images, or your newest images of the same name."""
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}", hint="give the path of an image file")
    for given in bases:
        if not ID_RE.match(given):
            raise InvalidInput(f"bad --base id {given!r}", hint="ids are 12 hex digits; see `fg-image list`")
    base = path.name
    guessed = next((f for f in ("tar.zst", "tar.gz", "qcow2", "raw", "img", "squashfs", "iso", "tar")
                    if base.endswith("." + f)), None)
    fmt = format or ("raw" if guessed in (None, "img") else guessed)
    stem = base[: -(len(guessed) + 1)] if guessed else base
    provenance, sha256 = _manifest_of(path, manifest) if manifest is not None else (None, None)
    try:
        meta = ImageMeta(name=name or stem, os=OsInfo(family=os_family, release=release, arch=arch), format=fmt,
                         tags=tag, description=description, public=public, parent=parent, provenance=provenance)
    except ValidationError as e:
        raise invalid(e) from None
    size = path.stat().st_size
    repo = open_repo()
    with open(path, "rb") as src, transfer(f"upload {path.name}", size) as progress:
        image = repo.put(src, meta, size, sha256, progress=progress, bases=bases)
    if as_json:
        print_json(image)
    else:
        console.print(image.id)


MANIFEST_MAX = 4 << 20
"""Bytes of a manifest.json: a build's package list and recipe take tens of kilobytes."""


def _manifest_of(path: Path, manifest: Path) -> tuple[dict[str, Any], str]:
    """The build manifest that lists `path` (by its sha256), and that sha256: a manifest of another build
    is refused, so an image never carries a package list that is not its own."""
    try:
        with open(manifest, "rb") as f:
            text = f.read(MANIFEST_MAX + 1)
    except OSError as e:
        raise InvalidInput(f"--manifest {manifest}: {e.strerror}",
                           hint="give the manifest.json generate wrote") from None
    try:
        doc = json.loads(text) if len(text) <= MANIFEST_MAX else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        raise InvalidInput(f"--manifest {manifest} is not a build manifest (JSON with artifacts, up to 4 MiB)",
                           hint="give the manifest.json `fg-image generate --no-upload -o DIR` wrote")
    sha256 = sha256_of(path)
    if not any(isinstance(a, dict) and a.get("sha256") == sha256 for a in doc["artifacts"]):
        raise InvalidInput(f"--manifest {manifest} does not list {path.name} (no artifact has its sha256)",
                           hint="give the manifest written with this file by the same build")
    return doc, sha256


@commands.command("download")
def download(
    image_id: str = typer.Argument(..., help="image id"),
    output: Path = typer.Option(None, "-o", "--output", help="file or directory to write (default: NAME.FORMAT here)"),
    seeds: list[Path] = typer.Option([], "--seed", help="a local file sharing much with the image (its parent, "
                                     "an earlier download): its chunks are not fetched again; repeat for more"),
) -> None:
    """Fetch an image; an interrupted download resumes from its .part file.

    From a shared service only the chunks found neither in the --seed files nor in the local chunk
    cache (the chunk_cache setting bounds it) travel."""
    if not ID_RE.match(image_id):
        raise InvalidInput(f"bad image id {image_id[:40]!r}", hint="ids are 12 hex digits; see `fg-image list`")
    if output is not None and not output.is_dir() and not output.parent.is_dir():
        raise InvalidInput(f"cannot write {output}: there is no directory {output.parent}",
                           hint="create it first, or give another -o")
    for seed in seeds:
        if not seed.is_file():
            raise InvalidInput(f"no such seed file: {seed}", hint="give files that share content with the image")
    repo = open_repo()
    image = repo.show(image_id)
    checked_id(image.id, image_id)  # the rest of the answer names the file and the bytes to fetch
    target = _download_target(output, image)
    fetch_image(repo, image, target, seeds)
    print(target, file=sys.stderr if sys.stdout.isatty() else sys.stdout)


def fetch_image(repo: Repository, image: Image, target: Path, seeds: list[Path] | None = None) -> None:
    """The image's bytes, checked, at `target`: through `target`.part, which an interrupted fetch resumes."""
    part = target.with_name(target.name + ".part")
    try:
        if not _fetch_delta(repo, image, part, seeds or []):
            _fetch(repo, image, part)
        os.replace(part, target)
    except OSError as e:
        if e.errno not in FILE_ERRNOS:
            raise
        raise file_failure(e, target) from e


def _download_target(output: Path | None, image: Image) -> Path:
    """Where a download goes: -o FILE as given; otherwise a name made from the repository's answer,
    which a hostile or broken service chooses, so it is made safe (no path, no hidden file)."""
    if output is not None and not output.is_dir():
        return output
    name = local_file_name(image.name, image.format, image.id)
    return (output or Path()) / name


def _fetch_delta(repo: Repository, image: Image, part: Path, seeds: list[Path]) -> bool:
    """From a service, fetch only the chunks the seeds, the chunk cache and an interrupted download's
    .part do not hold; False for an image stored before chunking (or a direct database: nothing to save)."""
    from rain.repository import client_delta
    from rain.repository.chunk_cache import ChunkCache
    from rain.repository.client import Client

    if not isinstance(repo, Client):
        return False
    s = settings()
    cache = ChunkCache(s.data_path / "cache" / "chunks", s.chunk_cache)
    earlier = part.with_name(part.name + ".seed")  # what an interrupted download got is a seed too
    if part.exists():
        os.replace(part, earlier)
    try:
        with transfer(f"download {image.name}", image.size) as progress:
            got = client_delta.get(repo, image.id, part, [*seeds, *([earlier] if earlier.exists() else [])],
                                   cache, progress)
    except Conflict:
        if earlier.exists():
            os.replace(earlier, part)  # an old-style download to resume
        return False
    finally:
        earlier.unlink(missing_ok=True)
    if got.local:
        print(f"fetched {human(got.fetched)} of {human(got.size)}; {human(got.local)} from seeds and the "
              "chunk cache", file=sys.stderr)
    return True


def _fetch(repo: Repository, image: Image, part: Path) -> None:
    """The image's bytes into `part`, resuming what an earlier run left there and checking the whole."""
    offset = part.stat().st_size if part.exists() else 0
    if offset > image.size:
        part.unlink()
        offset = 0
    try:  # the check of a resumed file belongs to the download: its ✓ comes after it
        with transfer(f"download {image.name}", image.size, offset) as progress:
            with open(part, "ab") as dest:
                repo.get(image.id, dest, offset=offset, progress=progress)
            if offset:  # a resumed download: check the whole file
                _check_whole(part, image)
    except IntegrityError:
        part.unlink(missing_ok=True)
        raise


def _check_whole(part: Path, image: Image) -> None:
    if sha256_of(part) != image.sha256:
        raise IntegrityError(f"the resumed download of {image.id} failed its checksum",
                             hint="download again from the start")


@commands.command("list")
def list_images(
    name: str = typer.Option(None, "--name"),
    os_family: str = typer.Option(None, "--os"),
    release: str = typer.Option(None, "--release"),
    arch: str = typer.Option(None, "--arch"),
    format: str = typer.Option(None, "--format"),
    tag: str = typer.Option(None, "--tag"),
    owner: str = typer.Option(None, "--owner"),
    parent: str = typer.Option(None, "--parent", help="images derived from this one"),
    status: Status = typer.Option(None, "--status"),
    visibility: Visibility = typer.Option(None, "--visibility"),
    verdict: Verdict = typer.Option(None, "--verdict", help="vetting: pass (blocked for no target), fail "
                                    "(quarantined for one), none (never vetted)"),
    registered: str = typer.Option(None, "--registered", help="registered on this target (any site)"),
    search: str = typer.Option(None, "--search", help="words the name's words start with, any case: "
                                "'deb book' finds debian-bookworm-kernel"),
    sort: str = typer.Option("-created", "--sort", help="field to sort by; '-' for descending"),
    limit: int = typer.Option(100, "--limit"),
    skip: int = typer.Option(0, "--skip"),
    after: str = typer.Option(None, "--after", help="only images after this one (the last of the previous "
                              "page): the next page, read as quickly as the first"),
    before: str = typer.Option(None, "--before", help="only images before this one (the first of the next "
                               "page): the previous page"),
    as_json: bool = json_flag(),
) -> None:
    """List the images you may read."""
    try:
        query = ImageQuery(name=name, os_family=os_family, release=release, arch=arch, format=format, tag=tag,
                           owner=owner, parent=parent, status=status, visibility=visibility, verdict=verdict,
                           registered=registered, search=search, sort=sort, limit=limit, skip=skip, after=after,
                           before=before)
    except ValidationError as e:
        raise invalid(e) from None
    images = open_repo().list(query)
    print_json(images) if as_json else render.images_table(images)


@commands.command("show")
def show(image_id: str = typer.Argument(...), as_json: bool = json_flag()) -> None:
    """Show one image: metadata, provenance, vetting, registrations and derived images."""
    repo = open_repo()
    image = repo.show(image_id)
    derived = repo.list(ImageQuery(parent=image.id, sort="created"))
    if as_json:
        print_json({**image.model_dump(mode="json"), "derived": [d.model_dump(mode="json") for d in derived]})
    else:
        render.image_detail(image, derived)


@commands.command("sbom")
def sbom_cmd(
    image_id: str = typer.Argument(...),
    output: Path = typer.Option(None, "--output", "-o", help="write it to FILE (default: standard output)"),
) -> None:
    """Print an image's SBOM: SPDX 2.3 JSON of its packages, versions and licenses, and its sha256."""
    image = open_repo().show(image_id)
    document = sbom.sbom_for(image.id, image.provenance, image.sha256, image.format)
    if output is None:
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
        return
    try:
        replace_file(output, document)
    except OSError as e:
        raise file_failure(e, output, "write the SBOM to") from None


@commands.command("modify")
def modify(
    image_id: str = typer.Argument(...),
    name: str = typer.Option(None, "--name"),
    description: str = typer.Option(None, "--description"),
    os_family: str = typer.Option(None, "--os"),
    release: str = typer.Option(None, "--release"),
    arch: str = typer.Option(None, "--arch"),
    format: str = typer.Option(None, "--format"),
    add_tag: list[str] = typer.Option([], "--tag", help="add a tag"),
    remove_tag: list[str] = typer.Option([], "--untag", help="remove a tag"),
    public: bool = typer.Option(None, "--public/--private", help="make readable by everyone, or not"),
) -> None:
    """Change an image's metadata or visibility."""
    repo = open_repo()
    os_info = None
    if any(v is not None for v in (os_family, release, arch)):
        current = repo.show(image_id).os
        os_info = OsInfo(family=os_family if os_family is not None else current.family,
                         release=release if release is not None else current.release,
                         arch=arch if arch is not None else current.arch)
    try:
        changes = ImageChanges(name=name, description=description, os=os_info, format=format,
                               add_tags=add_tag, remove_tags=remove_tag, public=public)
    except ValidationError as e:
        raise invalid(e) from None
    render.image_detail(repo.modify(image_id, changes))


@commands.command("remove")
def remove(
    image_id: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force", help="remove even if it is registered on a target"),
    yes: bool = yes_flag(),
) -> None:
    """Remove an image (its bytes go when no other image shares them)."""
    repo = open_repo()
    image = repo.show(image_id)
    if not yes:
        confirm(f"remove image {image.id} ({visible(image.name)}, {human(image.size)})?",
                f"removing image {image.id} ({image.name})")
    repo.remove(image_id, force=force)
    console.print(plain(f"removed {image.id} ({image.name})"))


@commands.command("share")
def share(image_id: str = typer.Argument(...), users: list[str] = typer.Argument(...)) -> None:
    """Let named users read an image."""
    image = open_repo().share(image_id, users)
    console.print(plain(f"{image.id} shared with: {', '.join(image.shared_with) or '-'}"))


@commands.command("unshare")
def unshare(image_id: str = typer.Argument(...), users: list[str] = typer.Argument(...)) -> None:
    """Stop sharing an image with named users."""
    image = open_repo().unshare(image_id, users)
    console.print(plain(f"{image.id} shared with: {', '.join(image.shared_with) or '-'}"))


@commands.command("history")
def history(
    image_id: str = typer.Argument(None, help="only this image"),
    user: str = typer.Option(None, "--user", help="only this user's actions"),
    limit: int = typer.Option(100, "--limit"),
    as_json: bool = json_flag(),
) -> None:
    """Who did what to which image, when (newest first)."""
    events = open_repo().history(image_id, user, limit)
    print_json(events) if as_json else render.events_table(events)


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
