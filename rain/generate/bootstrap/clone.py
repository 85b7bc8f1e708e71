"""Clone: start from a repository image (a tar.zst rootfs) instead of bootstrapping.

The archive comes from someone else, so it is unpacked member by member:
no absolute names or '..', no device nodes or fifos (skipped), no symlink
whose target climbs out of the root, no hard link to outside the archive, and
nothing written through a symlinked directory. Ownership and modes are kept.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path
from typing import IO, Any

import zstandard

from rain.errors import NotFound, RecipeError
from rain.generate.bootstrap.base import BuildContext
from rain.generate.recipe import Format, Recipe


class UnsafeArchive(RecipeError):
    pass


def check_base(repo: Any, recipe: Recipe) -> Any:
    """The base image's record, once we know the user may read it and it can be cloned."""
    if repo is None:
        raise RecipeError("base: cloning an image needs the repository", hint="configure one, see docs/build.md")
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


def clone(ctx: BuildContext, repo: Any) -> None:
    image_id = ctx.recipe.base
    archive = ctx.handle.spec.workdir / "base.tar.zst"
    try:
        with open(archive, "wb") as f:
            repo.get(image_id, f)
    except NotFound:
        raise RecipeError(f"base: image {image_id} does not exist or you may not read it",
                          hint="ask its owner to share it with you") from None
    skipped = safe_unpack(archive, ctx.handle.root)
    archive.unlink()
    ctx.facts["clone_of"] = image_id
    ctx.facts["base_cached"] = False
    if skipped:
        ctx.reporter.info(f"skipped {skipped} device nodes/fifos from the base image")


def safe_unpack(archive: Path, root: Path) -> int:
    """Unpack a tar.zst into root; returns how many special files were skipped."""
    dctx = zstandard.ZstdDecompressor()
    with open(archive, "rb") as raw, dctx.stream_reader(raw) as stream:
        return safe_extract(stream, root)


def safe_extract(stream: IO[bytes], root: Path, what: str = "base") -> int:
    """Unpack a plain tar stream into root member by member (see the module doc); returns the skipped count."""
    skipped = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                skipped += _extract(tar, m, root)
    except UnsafeArchive as e:
        raise UnsafeArchive(e.message.replace("base:", f"{what}:", 1), hint=e.hint) from None
    except tarfile.TarError as e:
        raise RecipeError(f"{what}: not a readable tar archive: {e}", hint=_HINT) from None
    return skipped


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, root: Path) -> int:
    name = _member_name(m.name)
    if name is None:
        return 0  # the root itself
    if m.ischr() or m.isblk() or m.isfifo():
        return 1
    if m.issym():
        _check_symlink(name, m.linkname)
    elif m.islnk():
        target = _member_name(m.linkname)
        if target is None:
            raise UnsafeArchive(f"base: hard link {m.name!r} points at the root", hint=_HINT)
        _check_parents(root, target)
        m.linkname = target
    _check_parents(root, name)
    m.name = name
    # a hard link shares its target's inode: its own header must not re-chmod that
    tar.extract(m, root, set_attrs=not m.islnk(), numeric_owner=True, filter="fully_trusted")
    return 0


_HINT = "the base image is unsafe to unpack; rebuild it with fg-image generate"


def _member_name(name: str) -> str | None:
    if name.startswith("/") or "\x00" in name:
        raise UnsafeArchive(f"base: member {name!r} has an absolute path", hint=_HINT)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"base: member {name!r} climbs out with '..'", hint=_HINT)
    return "/".join(parts) or None


def _check_symlink(name: str, target: str) -> None:
    base = "/" if target.startswith("/") else "/" + posixpath.dirname(name)
    depth = 0
    for part in posixpath.join(base, target).split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise UnsafeArchive(f"base: symlink {name!r} -> {target!r} escapes the root", hint=_HINT)


def _check_parents(root: Path, name: str) -> None:
    """Refuse to write through a symlink that an earlier member placed on the way."""
    path = root
    for part in name.split("/")[:-1]:
        path = path / part
        if path.is_symlink():
            raise UnsafeArchive(f"base: member {name!r} would be written through the symlink "
                                f"/{path.relative_to(root)}", hint=_HINT)
    if os.path.isdir(path) is False and path != root and os.path.lexists(path):
        raise UnsafeArchive(f"base: member {name!r} is below a non-directory", hint=_HINT)
