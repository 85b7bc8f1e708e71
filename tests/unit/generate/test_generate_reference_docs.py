"""docs/recipes.md carries the field tables generated from the recipe models, up to date."""

from __future__ import annotations

from pathlib import Path

from rain.reference import COMMAND, recipe_reference, splice

DOC = Path(__file__).resolve().parents[3] / "docs" / "recipes.md"


def test_the_recipe_reference_matches_the_models() -> None:
    text = DOC.read_text()
    assert recipe_reference() in text, f"run: {COMMAND}"
    assert splice(text, "recipe", recipe_reference()) == text


def test_every_recipe_field_is_documented() -> None:
    text = DOC.read_text()
    for field in ("name", "os", "variant", "mirror", "repositories", "packages", "files", "users",
                  "services", "run", "disk_size", "formats", "upload", "base", "vars", "share_with"):
        assert f"| `{field}` |" in text, field
