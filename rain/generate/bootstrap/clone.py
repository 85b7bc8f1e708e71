"""Clone: start from a repository image (a tar.zst rootfs) instead of bootstrapping.

The archive comes from someone else, so it goes through the same unpacker as
the registrar's (rain.image.untar): device nodes and FIFOs are skipped, and a
member that climbs out of the root, links outside it or would be written
through a link fails the build. Ownership and modes are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import zstandard

from rain.errors import InvalidInput, NotFound, RecipeError
from rain.generate.context import BuildContext
from rain.generate.recipe import Format, Recipe
from rain.image import untar
from rain.repository.base import Repository
from rain.repository.models import Image


class UnsafeArchive(RecipeError):
    pass


def check_base(repo: Repository | None, recipe: Recipe) -> Image:
    """The base image's record, once we know the user may read it and it can be cloned."""
    if repo is None:
        raise RecipeError("base: cloning an image needs the repository", hint="configure one, see docs/build.md")
    assert recipe.base is not None  # prepare checks only a recipe with a base
    try:
        img = repo.show(recipe.base)
    except NotFound:
        raise RecipeError(f"base: image {recipe.base} does not exist or you may not read it",
                          hint="see `fg-image list`; ask its owner to share it with you") from None
    if img.format != Format.TAR_ZST.value:
        raise RecipeError(f"base: image {recipe.base} is {img.format}; cloning needs a tar.zst image",
                          hint="use the tar.zst image of the same build (`fg-image list --name ...`)")
    if img.os.family and img.os.family != recipe.os.family:
        raise RecipeError(f"base: image {recipe.base} is {img.os.family}, the recipe says {recipe.os.family}",
                          hint="make os.family match the base image")
    return img


def clone(ctx: BuildContext, repo: Repository | None) -> None:
    image_id = ctx.recipe.base
    assert repo is not None and image_id is not None  # prepare's check_base made sure of both
    archive = ctx.handle.spec.workdir / "base.tar.zst"
    try:
        with open(archive, "wb") as f:
            repo.get(image_id, f)
    except NotFound:
        raise RecipeError(f"base: image {image_id} does not exist or you may not read it",
                          hint="ask its owner to share it with you") from None
    skipped = safe_unpack(archive, ctx.handle.root)
    archive.unlink()
    ctx.base_tree = ctx.handle.root
    ctx.facts["clone_of"] = image_id
    ctx.facts["base_cached"] = False
    if skipped:
        ctx.reporter.info(f"skipped {skipped} device nodes/fifos from the base image")


def safe_unpack(archive: Path, root: Path) -> int:
    """Unpack a tar.zst into root; returns how many special files were skipped."""
    dctx = zstandard.ZstdDecompressor()
    with open(archive, "rb") as raw, dctx.stream_reader(raw, read_across_frames=True) as stream:
        return safe_extract(stream, root)


def safe_extract(stream: IO[bytes], root: Path, what: str = "base", layer: bool = False) -> int:
    """Unpack a plain tar stream into root (see the module doc); returns how many special files were skipped.
    With `layer`, the stream is an overlayfs upper layer laid over what root shows (its whiteouts remove)."""
    try:
        refused = untar.unpack_stream(stream, root, what, layer=layer)
    except InvalidInput as e:
        raise RecipeError(f"{what}: {e.message}", hint=_HINT) from None
    unsafe = [f for f in refused if f.rule not in SKIPPED | {"xattr-dropped"}]  # a label the build does without
    if unsafe:
        first = unsafe[0]
        more = f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""
        raise UnsafeArchive(f"{what}: member {first.paths[0] if first.paths else '?'} "
                            f"{UNSAFE[first.rule]}{more}", hint=_HINT)
    return sum(1 for f in refused if f.rule in SKIPPED)


SKIPPED = {"device-node", "special-file"}
"""Refused members a clone does without: /dev is made afresh by the build."""
UNSAFE = {"archive-escape": "lies outside the root", "link-outside": "links outside the root or through a link"}
_HINT = "the base image is unsafe to unpack; rebuild it with fg-image generate"
