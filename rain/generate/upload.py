"""Put every artifact of a build into the repository, with the manifest as provenance.

All or nothing: if one upload or share fails, the images this build already
uploaded are removed again, so a failed build leaves no half image behind.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rain.errors import InvalidInput, RainError
from rain.generate.recipe import Recipe
from rain.repository.base import Repository
from rain.repository.fields import problem
from rain.repository.models import ImageMeta, OsInfo

if TYPE_CHECKING:  # build.py imports this module lazily, inside generate
    from rain.generate.build import BuildResult

log = logging.getLogger(__name__)


def upload(repo: Repository | None, recipe: Recipe, result: BuildResult) -> dict[str, str]:
    """format → new image id."""
    if repo is None:
        raise InvalidInput("no repository to upload to", hint="pass --no-upload or configure a repository")
    up = recipe.upload
    os_info = OsInfo(family=str(recipe.os.family), release=recipe.os.release, arch=recipe.os.arch)
    try:  # every record is checked before the first byte moves: the repository refuses what it cannot store
        metas = [ImageMeta(name=recipe.image_name(), os=os_info, format=str(a.format), tags=list(up.tags),
                           description=up.description or f"built by Rain from recipe {recipe.name}",
                           public=up.public, parent=recipe.base, provenance=result.manifest)
                 for a in result.artifacts]
    except ValidationError as e:
        raise InvalidInput(f"the repository cannot store this build's record: {problem(e)}",
                           hint="fix the recipe value it names (see docs/repository.md, Errors and limits), "
                                "or pass --no-upload") from None
    done: dict[str, str] = {}
    try:
        for a, meta in zip(result.artifacts, metas, strict=True):
            with open(a.path, "rb") as f:
                image = repo.put(f, meta, size=a.size, sha256=a.sha256)
            done[str(a.format)] = image.id
            if up.share_with:
                repo.share(image.id, list(up.share_with))
    except BaseException:
        for image_id in done.values():
            try:
                repo.remove(image_id, force=True)
            except RainError as e:  # keep the original error; this one is secondary
                log.warning("could not remove half-uploaded image %s: %s", image_id, e)
        raise
    return done
