"""Bad recipes get one line naming the file, the YAML line, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rain.errors import RecipeError
from rain.generate.loader import load_recipe, parse_overrides
from rain.generate.recipe import Format, OsFamily, recipe_hash

GOOD = """\
name: web
os:
  family: debian
  release: bookworm
packages:
  - hello
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path: Path, *sets: str) -> RecipeError:
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, sets)
    assert "\n" not in exc.value.one_line()
    return exc.value


def test_good_recipe_loads_with_defaults(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, GOOD)).recipe
    assert r.os.family is OsFamily.DEBIAN and r.os.arch == "amd64"
    assert r.formats == [Format.TAR_ZST]
    assert r.image_name() == "web"


def test_unknown_field_names_it_its_line_and_the_valid_ones(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "colour: blue\n"))
    assert "r.yaml:7" in e.message and "'colour'" in e.message
    assert "packages" in (e.hint or "") and "formats" in (e.hint or "")


def test_unknown_nested_field_lists_that_models_fields(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "users:\n  - name: bob\n    sudoer: true\n"))
    assert "r.yaml:9" in e.message and "users.0.sudoer" in e.message
    assert "ssh_keys" in (e.hint or "")


def test_shell_in_a_package_name_is_refused_with_its_line(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "  - vim;rm -rf /\n"))
    assert "r.yaml:7" in e.message and "packages.1" in e.message and "vim;rm -rf /" in e.message


@pytest.mark.parametrize("bad", ["-oAPT::x=y", "a b", "$(reboot)", "pkg`id`", "x|y", ""])
def test_option_and_shell_lookalikes_are_not_package_names(tmp_path: Path, bad: str) -> None:
    e = error_of(write(tmp_path, GOOD), f"packages=[{bad!r}]")
    assert "package name" in e.message


def test_unknown_release_lists_known_ones(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD.replace("bookworm", "xenial")))
    assert "unknown release 'xenial'" in e.message and "trixie" in e.message


def test_release_numbers_are_aliases(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, GOOD), ["os.release=13"]).recipe.os.release == "trixie"


def test_rpm_arch_names_for_rhel(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, "name: r\nos: {family: rocky, release: 9, arch: amd64}\n")).recipe
    assert r.os.arch == "x86_64"


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, "name: x\nos: [unclosed\n"))
    assert "not valid YAML" in e.message and "r.yaml:" in e.message


def test_files_must_be_absolute_and_stay_inside(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "files:\n  - path: /etc/../../x\n    content: hi\n"))
    assert "files.0.path" in e.message


def test_missing_source_file_fails_before_a_build(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "files:\n  - path: /etc/x\n    source: nothere.txt\n"))
    assert "nothere.txt" in e.message and "r.yaml:9" in e.message


def test_run_steps_are_argv_lists_or_scripts(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("#!/bin/sh\necho hi\n")
    r = load_recipe(write(tmp_path, GOOD + "run:\n  - [echo, 'a; b']\n  - script: s.sh\n"))
    assert r.recipe.run[0].argv == ["echo", "a; b"]
    assert r.inputs["s.sh"].startswith(b"#!/bin/sh")
    e = error_of(write(tmp_path, GOOD + "run:\n  - echo hi\n", "bad.yaml"))
    assert "run.0" in e.message


def test_bad_ssh_key_and_user_name(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "users:\n  - name: Bob\n"))
    assert "users.0.name" in e.message
    e = error_of(write(tmp_path, GOOD + "users:\n  - name: bob\n    ssh_keys: ['not a key']\n", "k.yaml"))
    assert "ssh key" in e.message


def test_jinja_variables_and_set_overrides(tmp_path: Path) -> None:
    text = "name: n-{{ rel }}\nvars: {rel: bookworm}\nos: {family: debian, release: '{{ rel }}'}\n"
    p = write(tmp_path, text)
    assert load_recipe(p).recipe.name == "n-bookworm"
    r = load_recipe(p, ["vars.rel=trixie", "packages=[hello, less]", "upload.tags=[a]"]).recipe
    assert (r.name, r.os.release, r.packages, r.upload.tags) == ("n-trixie", "trixie", ["hello", "less"], ["a"])


def test_undefined_variable_says_how_to_define_it(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD.replace("name: web", "name: '{{ nope }}'")))
    assert "nope" in e.message and "vars" in (e.hint or "")


def test_bad_set_syntax(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="--set"):
        parse_overrides(["no-equals-sign"])


def test_sudo_users_bring_the_sudo_package(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, GOOD + "users:\n  - {name: bob, sudo: true}\n")).recipe
    assert r.all_packages() == ["hello", "sudo"]


def test_recipe_hash_follows_content_not_upload_options(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    base = recipe_hash(load_recipe(p).recipe, "m", {})
    assert recipe_hash(load_recipe(p, ["upload.tags=[x]"]).recipe, "m", {}) == base
    assert recipe_hash(load_recipe(p, ["packages=[hello, less]"]).recipe, "m", {}) != base
    assert recipe_hash(load_recipe(p).recipe, "other-mirror", {}) != base


def test_base_must_be_an_image_id(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, GOOD + "base: ../../etc\n"))
    assert "base" in e.message


def test_disk_size_and_formats(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, GOOD + "disk_size: 2G\nformats: [raw, qcow2, raw]\n")).recipe
    assert r.disk_size == 2 << 30 and r.formats == [Format.RAW, Format.QCOW2]
    e = error_of(write(tmp_path, GOOD + "formats: [vmdk]\n", "f.yaml"))
    assert "formats.0" in e.message


@pytest.mark.parametrize(("family", "release", "given", "stored"), [
    ("debian", "bookworm", "x86_64", "amd64"), ("debian", "bookworm", "aarch64", "arm64"),
    ("ubuntu", "noble", "ppc64le", "ppc64el"), ("rocky", "9", "arm64", "aarch64"),
    ("fedora", "40", "ppc64el", "ppc64le"), ("alma", "9", "s390x", "s390x"),
])
def test_a_recipe_arch_is_stored_in_its_familys_own_spelling(tmp_path: Path, family: str, release: str,
                                                             given: str, stored: str) -> None:
    text = f"name: r\nos: {{family: {family}, release: '{release}', arch: {given}}}\n"
    assert load_recipe(write(tmp_path, text)).recipe.os.arch == stored


def test_unknown_arch_lists_the_ones_rain_builds(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, "name: r\nos: {family: debian, release: bookworm, arch: i386}\n"))
    assert "unknown arch 'i386': use one of amd64, arm64, ppc64el, s390x" in e.message
