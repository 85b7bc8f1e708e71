"""The date a build clamps its times to: SOURCE_DATE_EPOCH when given, else its packages' newest date."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rain.errors import InvalidInput
from rain.generate.build import given_epoch
from rain.generate.loader import load_recipe
from rain.generate.recipe import recipe_hash
from rain.image.tarball import packaged_epoch

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "debian-variant.yaml"


def _tree(root: Path, unpacked_at: int) -> None:
    """A dpkg tree: foo and bar unpacked at `unpacked_at` (their lists' time), foo's conffile edited after."""
    files = {"usr/bin/foo": 1_000, "etc/foo.conf": unpacked_at + 30, "usr/share/bar/data": 2_000,
             "etc/made-by-the-build": unpacked_at + 60, "usr/bin/extra": 3_000}
    for rel, when in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
        os.utime(root / rel, (when, when))
    (root / "usr/bin/foo-link").symlink_to("foo")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "foo.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/foo\n/usr/bin/foo-link\n/etc\n/etc/foo.conf\n")
    (info / "bar:amd64.list").write_text("/usr/share/bar\n/usr/share/bar/data\n")
    (info / "extra.list").write_text("/usr/bin/extra\n")  # a recipe's package, newer than the base's
    (info / "foo.md5sums").write_text("x  usr/bin/foo\n")
    (root / "var/lib/dpkg/status").write_text("".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: {priority}\nDescription: x\n y: z\n\n"
        for name, priority in (("bar", "required"), ("extra", "optional"), ("foo", "required"))))
    os.utime(info / "foo.md5sums", (unpacked_at - 1, unpacked_at - 1))  # dpkg's own files do not count
    for name in ("foo.list", "bar:amd64.list", "extra.list"):
        os.utime(info / name, (unpacked_at, unpacked_at))


def test_the_epoch_is_the_newest_packaged_file_as_shipped_whenever_the_build_ran(tmp_path: Path):
    """Files keep their package's time; one changed after its package's list was written (foo.conf) and files
    no package ships are the build's, and do not count: the same package versions give the same epoch on
    another day. Only the base system's packages (Priority: required) count: a variant with one more, newer
    package has its base's epoch."""
    (tmp_path / "monday").mkdir()
    (tmp_path / "friday").mkdir()
    _tree(tmp_path / "monday", 1_700_000_000)
    _tree(tmp_path / "friday", 1_700_400_000)
    assert packaged_epoch(tmp_path / "monday") == packaged_epoch(tmp_path / "friday") == 2_000
    # a clone's base: a tree unpacked from an image whose times were clamped to its epoch (2_000): lists and
    # the newest files at that time; the clone keeps the epoch
    clamped = tmp_path / "clamped"
    clamped.mkdir()
    _tree(clamped, 2_000)
    assert packaged_epoch(clamped) == 2_000
    (tmp_path / "bare" / "etc").mkdir(parents=True)
    assert packaged_epoch(tmp_path / "bare") is None  # no dpkg database: the tar's times are not clamped


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
    # RAIN_REPRODUCIBLE=false builds other bytes, so it never reuses a reproducible build's result, nor the reverse
    assert recipe_hash(recipe, "m", {}, reproducible=False) != plain == recipe_hash(recipe, "m", {}, reproducible=True)
