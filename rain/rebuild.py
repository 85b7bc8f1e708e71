"""`fg-image rebuild ID`: build a stored image again from its provenance and say whether the bytes are the same.

    outcome = rebuild(image, repo, settings, reporter, builder="qemu")

The provenance of an image `generate` made holds the recipe (as built: overrides
applied), the mirror, every installed package at its version and the
SOURCE_DATE_EPOCH the build used. The rebuild builds that recipe again, cold
(no cached base or result), in its own work directory, on any builder, with the
package versions pinned as a lock file would pin them and the same epoch, and
packs only the stored image's format. Same sha256: reproduced. Otherwise both
images are unpacked (as the registrar unpacks an upload: bounded, links never
followed) and compared file by file (rain.image.treediff); the outcome names the
first differences. Either way it is recorded on the image (`show` prints it).
"""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rain.config import Settings
from rain.digests import sha256_of
from rain.errors import IntegrityError, InvalidInput, RecipeError
from rain.generate.build import BuildOptions, generate
from rain.generate.cache import Cache
from rain.generate.layers import remove_tree
from rain.generate.loader import LoadedRecipe, read_inputs
from rain.generate.lock import read_lock, write_lock
from rain.generate.recipe import Format, Recipe
from rain.host import reaper
from rain.image import sbom, treediff
from rain.progress import Reporter
from rain.repository.base import Repository
from rain.repository.models import Image

RECORD_LINE = 600
"""The longest line of a reproduction record (rain.repository.models.ReproductionIn)."""


@dataclass(frozen=True)
class Outcome:
    image_id: str
    format: str
    identical: bool
    stored_sha256: str
    rebuilt_sha256: str
    builder: str
    differences: tuple[str, ...] = ()
    note: str = ""

    def record(self) -> dict[str, Any]:
        """What is stored on the image (`fg-image show` prints it): a name from the image may hold anything, so
        control characters are escaped and each line is cut to what a record keeps."""
        return {"identical": self.identical, "format": self.format, "builder": self.builder,
                "sha256": self.rebuilt_sha256, "differences": [_shown(d) for d in self.differences],
                "note": _shown(self.note)}


def _shown(text: str) -> str:
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return escaped if len(escaped) <= RECORD_LINE else escaped[:RECORD_LINE - 1] + "…"


def _inputs(image: Image, recipe_dir: Path) -> tuple[LoadedRecipe, int, str, str]:
    """The recipe as built, the epoch, the mirror and the stored file's format; one-line errors for what is
    missing from the provenance."""
    p = image.provenance
    if not sbom.has_sbom(p) or not isinstance(p.get("recipe"), dict):
        raise InvalidInput(f"image {image.id} was not built by `fg-image generate`: its provenance holds no recipe "
                           "to rebuild it from", hint="rebuild the image it was made from (`fg-image show` names "
                           "its parent)")
    epoch = p.get("source_date_epoch")
    if not isinstance(epoch, int):
        raise InvalidInput(f"image {image.id} records no SOURCE_DATE_EPOCH (it was built by rain "
                           f"{p.get('rain_version', '?')}), so its file times cannot be made again",
                           hint="build it again with this version of rain; that image can be rebuilt")
    try:
        recipe = Recipe.model_validate(p["recipe"])
    except ValidationError as e:
        raise InvalidInput(f"image {image.id}: the recipe in its provenance is not one this rain can build: "
                           f"{e.errors()[0]['msg']}", hint="rebuild it with the rain version that made it") from None
    fmt = next((str(a.get("format")) for a in p.get("artifacts") or []
                if isinstance(a, dict) and a.get("sha256") == image.sha256), image.format)
    if fmt not in {f.value for f in Format}:
        raise InvalidInput(f"image {image.id} is a {fmt!r} file, which `fg-image generate` does not make",
                           hint="rebuild the image it was made from")
    recipe = recipe.model_copy(update={"formats": [Format(fmt)]})  # only the file being checked
    path = recipe_dir / f"{recipe.name}.yaml"
    try:
        inputs = read_inputs(recipe, path)
    except RecipeError as e:
        raise RecipeError(f"image {image.id}: its recipe refers to a file that is not in {recipe_dir}: "
                          f"{e.message.split(': ', 1)[-1]}",
                          hint="give --recipe-dir DIR, the directory of the recipe it was built from") from None
    text = str(p.get("recipe_text") or "")
    return LoadedRecipe(recipe, path, text, inputs), epoch, str(p.get("mirror") or ""), fmt


def rebuild(image: Image, repo: Repository, settings: Settings, reporter: Reporter, builder: str | None = None,
            recipe_dir: Path | None = None, mirror: str | None = None) -> Outcome:
    loaded, epoch, recorded_mirror, fmt = _inputs(image, recipe_dir or Path.cwd())
    if not image.sha256:
        raise InvalidInput(f"image {image.id} has no sha256 (its upload never finished)", hint="upload it again")
    # the recorded epoch and seed only make the same bytes with the deterministic steps on
    settings = settings.with_overrides(mirror=mirror or recorded_mirror or None, reproducible=True)
    work_root = settings.data_path / "rebuild"
    work_root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix=f"{image.id}-", dir=work_root))
        reaper.track_path(work)  # removed (and unmounted) even if this process is SIGKILLed
        stack.callback(reaper.untrack_path, work)
        stack.callback(remove_tree, work)
        assert image.provenance is not None
        lock = read_lock(write_lock(work / f"{loaded.recipe.name}.lock", image.provenance, loaded.recipe.name))
        remedy = (f"the mirror has moved on since the image was built: rebuild from a snapshot mirror of that day, "
                  f"`fg-image rebuild {image.id} --mirror URL`")
        loaded = dataclasses.replace(loaded, lock=dataclasses.replace(lock, remedy=remedy))
        seed = image.provenance.get("disk_seed") or image.provenance.get("recipe_hash")
        options = BuildOptions(use_cache=False, upload=False, builder=builder, epoch=epoch, seed=seed)
        result = generate(loaded, settings, options, reporter, repo)
        # compared, then gone: keyed by the recorded epoch, no generate finds it, and a rebuild builds afresh
        stack.callback(Cache.for_data(settings.data_path).drop_result, result.directory.name)
        made = result.artifacts[0]
        outcome = Outcome(image.id, fmt, made.sha256 == image.sha256, image.sha256, made.sha256,
                          result.manifest.get("builder", builder or "local"))
        if not outcome.identical:
            with reporter.step("compare the trees"):
                outcome = _compare(outcome, image, repo, made.path, work)
    return outcome


def _compare(outcome: Outcome, image: Image, repo: Repository, rebuilt: Path, work: Path) -> Outcome:
    from rain.register.unpack import unpack

    stored = work / f"stored.{outcome.format}"
    with open(stored, "wb") as f:
        repo.get(image.id, f)
    if sha256_of(stored) != image.sha256:
        raise IntegrityError(f"image {image.id}: the downloaded bytes do not match its sha256",
                             hint="the stored copy is damaged: run `fg-image repo gc`, then try again")
    # what the unpacker refused (device nodes, links out of the root) is not in the trees: compare it too
    refused_stored = _refused(unpack(stored, work / "stored-root", outcome.format))
    refused_rebuilt = _refused(unpack(rebuilt, work / "rebuilt-root", outcome.format))
    found = treediff.compare(work / "stored-root", work / "rebuilt-root")
    found += [treediff.Difference(path, f"{what} (not unpacked), only in the {where}")
              for where, mine, other in (("stored image", refused_stored, refused_rebuilt),
                                         ("rebuild", refused_rebuilt, refused_stored))
              for path, what in sorted(mine.items()) if other.get(path) != what]
    found = sorted(found, key=lambda d: d.path)[:treediff.LIMIT]
    note = "" if found else (f"the files are the same; the {outcome.format} container differs (its own metadata "
                             "or layout)")
    return dataclasses.replace(outcome, differences=tuple(str(d) for d in found), note=note)


def _refused(findings: list[Any]) -> dict[str, str]:
    """path → why, for each member the unpacker did not place."""
    return {path: f.detail or f.rule for f in findings for path in f.paths}
