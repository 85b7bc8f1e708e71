"""Lock files (issue #16, acceptance 2): read and checked, written from a build's manifest, found beside
the recipe, joined to the cache keys, and held against what a build installed. The builds themselves are in
tests/e2e/generate/test_generate_reproducible.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rain.errors import BuildError, RecipeError
from rain.generate.loader import load_recipe
from rain.generate.lock import archives_from_policy, check_installed, lock_path, read_lock, write_lock
from rain.generate.recipe import recipe_hash

RECIPE = "name: mini\nos: {family: debian, release: bookworm, arch: amd64}\npackages: [hello]\n"
MANIFEST = {"os": {"family": "debian", "release": "bookworm", "arch": "amd64"}, "mirror": "file:///srv/mirror",
            "packages": [{"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64", "archive": "bookworm/main",
                          "license": "GPL-3+"},
                         {"name": "hello", "version": "2.10-3", "arch": "amd64", "archive": "bookworm/main"},
                         {"name": "libc6", "version": "2.36-9+deb12u9", "arch": "amd64", "archive": "local"}]}


def _recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "mini.yaml"
    recipe.write_text(RECIPE)
    return recipe


def test_a_written_lock_reads_back_with_every_package_and_pins_each_for_apt(tmp_path):
    recipe = _recipe(tmp_path)
    path = write_lock(lock_path(recipe), MANIFEST, "mini")
    assert path == tmp_path / "mini.lock" and not list(tmp_path.glob(".*part"))
    assert path.read_text().startswith("# The exact packages of recipe mini")
    lock = read_lock(path)
    assert [(p.name, p.version, p.arch, p.archive) for p in lock.packages] == \
        [(p["name"], p["version"], p["arch"], p["archive"]) for p in MANIFEST["packages"]]
    assert lock.version_of("hello") == "2.10-3" and lock.version_of("less") is None
    assert "Package: bash\nPin: version 5.2.15-2+b7\nPin-Priority: 1001\n" in lock.apt_preferences()


def test_the_lock_beside_a_recipe_is_used_for_its_os_and_joins_the_recipe_hash(tmp_path):
    recipe = _recipe(tmp_path)
    unlocked = load_recipe(recipe)
    assert unlocked.lock is None
    write_lock(lock_path(recipe), MANIFEST, "mini")
    locked = load_recipe(recipe)
    assert locked.lock is not None and locked.lock_note == ""
    r = locked.recipe
    assert recipe_hash(r, "m", {}, None, locked.lock.digest) != recipe_hash(r, "m", {}, None)
    assert load_recipe(recipe, use_lock=False).lock is None  # `fg-image lock --update`
    # a build for another release is another build: the lock is not used, and the build says why
    other = load_recipe(recipe, ["os.release=trixie"])
    assert other.lock is None and other.lock_note == \
        "not using mini.lock: it locks debian bookworm amd64, this build is debian trixie amd64"
    # the digest is what the lock pins, not its comments or the mirror it was made from
    text = lock_path(recipe).read_text()
    lock_path(recipe).write_text("# edited by hand\n" + text.replace("file:///srv/mirror", "file:///elsewhere"))
    assert read_lock(lock_path(recipe)).digest == locked.lock.digest


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["packages"][0].update(version="5.2 ; rm -rf /"), "packages.0.version: String should match"),
    (lambda d: d["packages"][1].update(name="-o=APT::Foo"), "packages.1.name: String should match"),
    (lambda d: d.update(lock=7), "lock: Input should be less than or equal to 1"),
    (lambda d: d["packages"].append(dict(d["packages"][0])), "packages: bash is there twice"),
    (lambda d: d.update(packages=[]), "packages: List should have at least 1 item"),
    (lambda d: d["packages"][0].update(extra="x"), "packages.0.extra: Extra inputs are not permitted"),
    (lambda d: d["packages"][0].update({"a\nb": 1}), "packages.0.a b: Extra inputs are not permitted"),
    (lambda d: d["os"].update(release="bookworm\nerror: forged"), "os.release: String should match"),
])
def test_a_bad_lock_is_one_line_naming_the_field_and_how_to_write_it_again(tmp_path, change, message):
    recipe = _recipe(tmp_path)
    path = write_lock(lock_path(recipe), MANIFEST, "mini")
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RecipeError, match="mini.lock: ") as e:
        load_recipe(recipe)
    assert message in e.value.message and "\n" not in e.value.message
    assert "fg-image lock --update" in e.value.hint


def test_a_lock_that_is_not_yaml_or_is_huge_is_refused(tmp_path):
    recipe = _recipe(tmp_path)
    lock_path(recipe).write_bytes(b"\xff\xfe[")
    with pytest.raises(RecipeError, match="is not a YAML lock file"):
        load_recipe(recipe)
    lock_path(recipe).write_text("x" * (5 << 20))
    with pytest.raises(RecipeError, match="larger than 4 MiB"):
        load_recipe(recipe)


def test_what_a_build_installed_is_held_against_its_lock(tmp_path):
    lock = read_lock(write_lock(lock_path(_recipe(tmp_path)), MANIFEST, "mini"))
    exact = [(p["name"], p["version"]) for p in MANIFEST["packages"]]
    check_installed(lock, exact)
    with pytest.raises(BuildError) as e:
        check_installed(lock, [("bash", "5.2.15-2+b8"), *exact[1:]])
    assert e.value.message == "mini.lock pins bash 5.2.15-2+b7, which the mirror no longer offers (it installed " \
                              "5.2.15-2+b8)"
    assert "snapshot mirror" in e.value.hint and "fg-image lock --update mini.yaml" in e.value.hint
    with pytest.raises(BuildError, match="lists hello 2.10-3, which the build no longer installs"):
        check_installed(lock, [exact[0], exact[2]])
    with pytest.raises(BuildError, match="the build installed less 590-2, which mini.lock does not list"):
        check_installed(lock, [*exact, ("less", "590-2")])
    # `fg-image rebuild`'s lock comes from the image, not from a file to write again: its hint is its own
    rebuilding = dataclasses.replace(lock, remedy="rebuild from a snapshot mirror")
    for installed in ([("bash", "5.2.15-2+b8"), *exact[1:]], [exact[0], exact[2]]):
        with pytest.raises(BuildError) as e:
            check_installed(rebuilding, installed)
        assert e.value.hint == "rebuild from a snapshot mirror"


def test_the_archive_of_each_installed_version_is_read_from_apt_cache_policy():
    policy = """bash:
  Installed: 5.2.15-2+b7
  Candidate: 5.2.15-2+b7
  Version table:
 *** 5.2.15-2+b7 500
        500 file:/srv/mirror bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
ca-certificates:
  Installed: 20230311
  Version table:
 *** 20230311 500
        500 file:/srv/mirror bookworm-updates/main all Packages
        500 file:/srv/mirror bookworm/main all Packages
        100 /var/lib/dpkg/status
libfoo:amd64:
  Installed: 1.0
  Version table:
     2.0 500
        500 file:/srv/mirror bookworm/main amd64 Packages
 *** 1.0 100
        100 /var/lib/dpkg/status
"""
    assert archives_from_policy(policy) == {"bash": "bookworm/main", "ca-certificates": "bookworm-updates/main",
                                            "libfoo": "local"}


def test_a_batch_uses_each_recipes_lock_and_its_matrix_entries_for_another_release_say_they_do_not(tmp_path):
    from rain.generate.batch import load_batch

    recipe = _recipe(tmp_path)
    write_lock(lock_path(recipe), MANIFEST, "mini")
    batch = tmp_path / "batch.yaml"
    batch.write_text("matrix:\n  - recipe: mini.yaml\n    axes: {os.release: [bookworm, trixie]}\n")
    items = load_batch(batch)
    assert [(i.loaded.recipe.os.release, i.loaded.lock is not None) for i in items] == \
        [("bookworm", True), ("trixie", False)]
    assert "it locks debian bookworm amd64" in items[1].loaded.lock_note


def test_a_package_no_lock_can_hold_is_one_line_and_writes_nothing(tmp_path):
    bad = {**MANIFEST, "packages": [*MANIFEST["packages"], {"name": "evil", "version": "1.0\nPin: *", "arch": "all"}]}
    with pytest.raises(BuildError, match="cannot lock evil 1.0 Pin: ") as e:
        write_lock(lock_path(_recipe(tmp_path)), bad, "mini")
    assert "\n" not in e.value.message and not lock_path(tmp_path / "mini.yaml").exists()
    caret = {**MANIFEST, "packages": [{"name": "glib2", "version": "2.68.4^20230101-1.el9", "arch": "x86_64"}]}
    assert read_lock(write_lock(lock_path(_recipe(tmp_path)), caret, "mini")).version_of("glib2") == \
        "2.68.4^20230101-1.el9"
