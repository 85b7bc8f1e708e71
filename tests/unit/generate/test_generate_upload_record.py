"""A build whose record the repository cannot store is refused with one line before any byte is uploaded."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from support.cli import RECIPES

from rain.errors import InvalidInput
from rain.generate.loader import load_recipe
from rain.generate.upload import upload

RECIPE = RECIPES / "debian-bookworm-minimal.yaml"


class NoUploads:
    """A repository that must not be reached."""

    def put(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an upload started although the record was refused")


def test_a_manifest_the_repository_cannot_store_fails_before_uploading(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE, []).recipe
    artifact = SimpleNamespace(format="tar.zst", path=tmp_path / "x.tar.zst", size=1, sha256="0" * 64)
    # a recipe var with a dotted key reaches the manifest; MongoDB cannot store such a key
    result = SimpleNamespace(artifacts=[artifact, artifact], manifest={"vars": {"a.b": "1"}})
    with pytest.raises(InvalidInput, match=r"^the repository cannot store this build's record: .*a\.b"):
        upload(NoUploads(), recipe, result)
