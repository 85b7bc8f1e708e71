"""The date a build clamps its tar's times to: SOURCE_DATE_EPOCH when given, else its package archive's date."""

from __future__ import annotations

from pathlib import Path

import pytest

from rain.errors import InvalidInput
from rain.generate.bootstrap.debian import archive_epoch
from rain.generate.build import given_epoch
from rain.generate.loader import load_recipe
from rain.generate.recipe import recipe_hash

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "debian-variant.yaml"


def test_the_archive_date_is_the_newest_release_date_apt_read():
    out = ("Date: Sat, 08 Nov 2025 09:56:30 UTC\nDate: Sun, 09 Nov 2025 20:11:16 UTC\n"
           "Date: not a date\nsomething else\n")
    assert archive_epoch(out) == 1762719076
    assert archive_epoch("") is None  # no lists (a clone whose lists went): the tar's times are not clamped


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5", "9" * 13])
def test_a_source_date_epoch_that_is_not_a_time_is_one_line_naming_it(value: str):
    with pytest.raises(InvalidInput) as e:
        given_epoch({"SOURCE_DATE_EPOCH": value})
    assert "SOURCE_DATE_EPOCH" in e.value.message and "\n" not in e.value.message
    assert "seconds since 1970" in (e.value.hint or "")


def test_a_given_epoch_is_part_of_what_the_result_depends_on():
    assert given_epoch({}) is None and given_epoch({"SOURCE_DATE_EPOCH": " 1700000000\n"}) == 1700000000
    recipe = load_recipe(RECIPE).recipe
    plain = recipe_hash(recipe, "m", {})
    assert recipe_hash(recipe, "m", {}, None) == plain
    assert recipe_hash(recipe, "m", {}, 1700000000) not in (plain, recipe_hash(recipe, "m", {}, 1700000001))
