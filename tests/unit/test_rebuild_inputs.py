"""What `fg-image rebuild` takes from an image's provenance, and the one-line errors for what it cannot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import RECIPES

from rain.errors import InvalidInput, RecipeError
from rain.generate.loader import load_recipe
from rain.generate.recipe import Format
from rain.rebuild import _inputs
from rain.repository.models import Image

SHA = "ab" * 32


def _image(provenance: dict[str, Any] | None, fmt: str = "tar.zst") -> Image:
    return Image(id="0123456789ab", name="mini", owner="alice", os={"family": "debian", "release": "bookworm",
                 "arch": "amd64"}, format=fmt, size=1, sha256=SHA, status="available", created=datetime.now(UTC),
                 provenance=provenance)


def _provenance(recipe: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"recipe_hash": "f" * 64, "recipe": recipe, "recipe_text": "", "mirror": "http://mirror.invalid/debian",
            "packages": [{"name": "base-files", "version": "12.4", "arch": "amd64"}],
            "source_date_epoch": 1_700_000_000,
            "os": {"family": "debian", "release": "bookworm", "arch": "amd64"}, "rain_version": "0.1",
            "artifacts": [{"format": "squashfs", "sha256": "cd" * 32}, {"format": "tar.zst", "sha256": SHA}],
            **changes}


def _recipe() -> dict[str, Any]:
    return load_recipe(RECIPES / "debian-bookworm-minimal.yaml").recipe.model_dump(mode="json")


def test_the_recipe_as_built_epoch_mirror_and_only_the_stored_format(tmp_path: Path) -> None:
    loaded, epoch, mirror, fmt = _inputs(_image(_provenance(_recipe())), tmp_path)
    assert (epoch, mirror, fmt) == (1_700_000_000, "http://mirror.invalid/debian", "tar.zst")
    assert loaded.recipe.formats == [Format.TAR_ZST] and loaded.recipe.formats[0] is Format.TAR_ZST
    assert loaded.recipe.packages == _recipe()["packages"]


@pytest.mark.parametrize(("provenance", "words"), [
    (None, "was not built by `fg-image generate`"),
    ({"derived_from": "x", "changes": []}, "was not built by `fg-image generate`"),
    ("no-epoch", "records no SOURCE_DATE_EPOCH"),
    ("bad-recipe", "the recipe in its provenance is not one this rain can build"),
], ids=["uploaded", "derived", "no-epoch", "bad-recipe"])
def test_what_cannot_be_rebuilt_is_one_line(tmp_path: Path, provenance: Any, words: str) -> None:
    if provenance == "no-epoch":
        provenance = _provenance(_recipe(), source_date_epoch=None)
    elif provenance == "bad-recipe":
        provenance = _provenance({**_recipe(), "os": {"family": "plan9"}})
    with pytest.raises(InvalidInput) as caught:
        _inputs(_image(provenance), tmp_path)
    line = caught.value.one_line()
    assert words in line and "\n" not in line


def test_a_file_the_recipe_refers_to_comes_from_recipe_dir(tmp_path: Path) -> None:
    recipe = {**_recipe(), "files": [{"path": "/etc/motd", "source": "motd.txt"}]}
    with pytest.raises(RecipeError) as caught:
        _inputs(_image(_provenance(recipe)), tmp_path)
    assert "motd.txt" in caught.value.message and "--recipe-dir" in (caught.value.hint or "")
    (tmp_path / "motd.txt").write_text("hello\n")
    loaded, *_ = _inputs(_image(_provenance(recipe)), tmp_path)
    assert loaded.inputs == {"motd.txt": b"hello\n"}
    assert yaml.safe_dump(loaded.recipe.model_dump(mode="json"))  # a recipe the build can use as it is


def test_a_difference_naming_any_path_is_a_record_the_repository_keeps() -> None:
    from rain.rebuild import RECORD_LINE, Outcome
    from rain.repository.models import ReproductionIn

    hostile = "/etc/\x1b[2Jfake\nline" + "x" * 5000 + ": content (1 → 2 bytes)"
    record = Outcome("0123456789ab", "tar.zst", False, SHA, "cd" * 32, "local", (hostile,), "").record()
    kept = ReproductionIn.model_validate(record)
    assert kept.differences[0].startswith("/etc/\\x1b[2Jfake\\x0aline") and len(kept.differences[0]) == RECORD_LINE
