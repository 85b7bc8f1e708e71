"""Issue #16 for real: lock files, and a cold build that `fg-image rebuild` gives again bit for bit.

Lock files (acceptance 2): `generate --lock` writes the exact packages of a build of the minimal recipe (plus
hello); a build with that lock installs exactly them, from a base bootstrapped with apt pinned to them; a lock
pinning a version the mirror lacks is a one-line error and stores nothing; `fg-image lock --update` writes it
again. The builds share the session's data dir (tests/e2e/generate/conftest.py): the unlocked builds start from
the base the other tests bootstrapped, each locked one bootstraps its own. The cold build and its
rebuilds have their own.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard
from support.cli import RECIPES
from support.host import mounts_under
from support.images import manifest, tar_names

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "mini.yaml"
    text = (RECIPES / "debian-bookworm-minimal.yaml").read_text()
    recipe.write_text(text.replace("  - ca-certificates\n", "  - ca-certificates\n  - hello\n"))
    return recipe


def _packages(listed: list[dict[str, Any]]) -> dict[str, str]:
    return {p["name"]: p["version"] for p in listed}


def test_a_lock_is_written_then_builds_exactly_its_versions_and_a_version_the_mirror_lacks_stores_nothing(
        gen: Any, tmp_path: Path, gen_data: Path) -> None:
    recipe = _recipe(tmp_path)
    made = gen("generate", str(recipe), "--lock", "--no-upload", "--output", str(tmp_path / "first"))
    assert made.returncode == 0, made.stderr
    lock_file = tmp_path / "mini.lock"
    lock = yaml.safe_load(lock_file.read_text())
    built = manifest(tmp_path / "first")
    assert _packages(lock["packages"]) == _packages(built["packages"]), "the lock is the build's package list"
    assert f"wrote {lock_file} ({len(built['packages'])} packages)" in made.stderr
    archives = {p["name"]: p.get("archive") for p in lock["packages"]}
    assert re.fullmatch(r"bookworm[\w-]*/main", archives["hello"]), archives["hello"]
    assert all(archives.values()), "every package says the archive it came from"
    assert lock["os"] == {"family": "debian", "release": "bookworm", "arch": "amd64"}

    # a build with the lock: its own base (the lock joins the cache keys), and exactly the lock's packages
    locked = gen("generate", str(recipe), "--output", str(tmp_path / "locked"))  # and uploaded
    assert locked.returncode == 0, locked.stderr
    assert f"locked by mini.lock: {len(lock['packages'])} packages at their versions" in locked.stderr
    assert "identical recipe built before" not in locked.stderr and "base system from cache" not in locked.stderr
    again = manifest(tmp_path / "locked")
    assert _packages(again["packages"]) == _packages(lock["packages"])
    assert again["recipe_hash"] != built["recipe_hash"]
    names = tar_names(tmp_path / "locked" / "debian-bookworm-minimal.tar.zst")
    assert "etc/apt/preferences.d/rain-lock.pref" not in names, "the build's pins stay out of the image"

    # `fg-image lock` does not overwrite a lock unasked
    refused = gen("lock", str(recipe))
    assert refused.returncode == 2 and "mini.lock exists" in refused.stderr and "--update" in refused.stderr

    # a version the mirror does not offer: a recipe package (asked for as NAME=VERSION), then one of the base
    stored = json.loads(gen("list", "--json").stdout)
    assert len(stored) == 1
    for name in ("hello", "base-files"):
        doc = yaml.safe_load(lock_file.read_text())
        [entry] = [p for p in doc["packages"] if p["name"] == name]
        entry["version"] += "+rain.gone1"
        lock_file.write_text(yaml.safe_dump(doc))
        failed = gen("generate", str(recipe), "--json")
        assert failed.returncode == 10, failed.stderr
        [line] = [ln for ln in failed.stderr.splitlines() if ln.startswith("error:")]
        assert f"mini.lock pins {name} {entry['version']}, which the mirror no longer offers" in line, line
        assert json.loads(gen("list", "--json").stdout) == stored, "nothing more is stored"
        assert mounts_under(gen_data) == [] and list((gen_data / "work").iterdir()) == []
        lock_file.write_text(yaml.safe_dump(lock))

    # `lock --update` builds without the lock (the first build's cached result) and writes it again
    lock_file.write_text(lock_file.read_text().replace("hello", "hello-gone"))
    updated = gen("lock", "--update", str(recipe))
    assert updated.returncode == 0, updated.stderr
    assert _packages(yaml.safe_load(lock_file.read_text())["packages"]) == _packages(lock["packages"])
    assert "hello-gone" not in lock_file.read_text() and f"wrote {lock_file}" in updated.stderr


def _tampered(archive: Path, dest: Path, name: str, data: bytes) -> None:
    """A copy of a tar.zst with one member's bytes replaced (the rest, pax headers included, as they were)."""
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as src, open(dest, "wb") as out, \
            zstandard.ZstdCompressor().stream_writer(out) as z, \
            tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for m in src:
            if m.name.removeprefix("./") == name:
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m, src.extractfile(m) if m.isfile() else None)


FORMATS = ("tar.zst", "squashfs", "raw", "qcow2")


def test_two_cold_builds_are_the_same_in_every_format_and_rebuild_names_the_file_a_changed_copy_differs_in(
        gen: Any, tmp_path: Path, settings: Any) -> None:
    """Issue #16, acceptances 1 and 3: the minimal recipe built cold in all four formats and stored, then built
    cold again in another data and work directory a few seconds later (no file may carry the time of its build):
    the same sha256 for every format. `fg-image rebuild` of the stored qcow2 builds it a third time from its
    provenance alone: reproduced, and recorded on the image. A stored copy of the tar.zst with one file changed
    (made here, the test-only path) is not reproduced, and the rebuild names that file."""
    from rain.repository.connect import open_store
    from rain.repository.models import ImageMeta

    recipe = str(RECIPES / "debian-bookworm-minimal.yaml")
    formats = [arg for f in FORMATS for arg in ("--format", f)]
    made = gen("generate", recipe, "--no-cache", *formats, "--output", str(tmp_path / "out"),
               env={"RAIN_DATA_DIR": str(tmp_path / "data1")})
    assert made.returncode == 0, made.stderr
    ids = {fmt: image_id for image_id, fmt in (line.split() for line in made.stdout.splitlines())}
    built = manifest(tmp_path / "out")
    assert built["base"]["base_cached"] is False, "a cold build bootstraps its own base"
    time.sleep(2)
    second = gen("generate", recipe, "--no-cache", "--no-upload", *formats, "--output", str(tmp_path / "out2"),
                 env={"RAIN_DATA_DIR": str(tmp_path / "data2")})
    assert second.returncode == 0, second.stderr
    sha = {a["format"]: a["sha256"] for a in built["artifacts"]}
    assert {a["format"]: a["sha256"] for a in manifest(tmp_path / "out2")["artifacts"]} == sha
    assert sorted(sha) == sorted(FORMATS)

    def results() -> list[str]:
        listed = gen("cache", "list", "--json", env={"RAIN_DATA_DIR": str(tmp_path / "data3")})
        return [e["key"] for e in json.loads(listed.stdout) if e["kind"] == "results"]

    again = gen("rebuild", ids["qcow2"], env={"RAIN_DATA_DIR": str(tmp_path / "data3")})
    assert again.returncode == 0, again.stderr
    assert f"reproduced: the rebuild of {ids['qcow2']} (qcow2, local builder) has the same sha256 {sha['qcow2']}" \
        in again.stdout
    shown = json.loads(gen("show", ids["qcow2"], "--json").stdout)
    [rep] = shown["reproductions"]
    assert (rep["identical"], rep["by"], rep["sha256"], rep["format"]) == (True, "admin", sha["qcow2"], "qcow2")
    assert re.search(r"reproduced\s+on \S+ \S+ by admin \(qcow2, local builder\)", gen("show", ids["qcow2"]).stdout)
    assert list((tmp_path / "data3" / "rebuild").iterdir()) == [], "the rebuild's work directory is gone"
    assert results() == [], "and its result: nothing else would use it"

    changed = tmp_path / "changed.tar.zst"
    _tampered(tmp_path / "out" / "debian-bookworm-minimal.tar.zst", changed, "etc/motd", b"not what was built\n")
    store = open_store(settings, "admin")
    meta = ImageMeta(name="tampered", os=shown["os"], format="tar.zst", provenance=built)
    with open(changed, "rb") as f:
        copy = store.put(f, meta, changed.stat().st_size)
    differs = gen("rebuild", copy.id, env={"RAIN_DATA_DIR": str(tmp_path / "data3")})
    assert differs.returncode == 14, differs.stderr
    assert f"not reproduced: the rebuild of {copy.id} (tar.zst, local builder)" in differs.stdout
    lines = [ln.strip() for ln in differs.stdout.splitlines() if ln.startswith("  /")]
    assert lines and lines[0].startswith("/etc/motd: content ("), differs.stdout
    assert all(not ln.startswith("/usr") for ln in lines), "only what was changed differs"
    [rep] = json.loads(gen("show", copy.id, "--json").stdout)["reproductions"]
    assert rep["identical"] is False and rep["differences"][0].startswith("/etc/motd: content")
    assert mounts_under(tmp_path) == [] and list((tmp_path / "data3" / "rebuild").iterdir()) == []
    assert results() == []


def test_the_cloud_recipe_built_cold_twice_is_the_same_in_every_format(gen: Any, tmp_path: Path) -> None:
    """Issue #16, acceptance 1 for the cloud recipe: its bootable disks (GPT, ESP with GRUB for BIOS and
    UEFI, the root file system growpart enlarges), cloud-init and kernel, built cold twice in different data
    and work directories at different times: the same sha256 for every format."""
    formats = [arg for f in FORMATS for arg in ("--format", f)]
    built = []
    for n in (1, 2):
        if n == 2:
            time.sleep(2)
        r = gen("generate", str(RECIPES / "debian-bookworm-cloud.yaml"), "--no-cache", "--no-upload", *formats,
                "--output", str(tmp_path / f"out{n}"), env={"RAIN_DATA_DIR": str(tmp_path / f"data{n}")})
        assert r.returncode == 0, r.stderr
        built.append(manifest(tmp_path / f"out{n}"))
    assert [m["base"]["base_cached"] for m in built] == [False, False], "each build bootstraps its own base"
    first, second = ({a["format"]: a["sha256"] for a in m["artifacts"]} for m in built)
    assert sorted(first) == sorted(FORMATS) and first == second
    assert {a["format"]: a.get("bootable") for a in built[0]["artifacts"]}["qcow2"], "a disk that boots"
    assert mounts_under(tmp_path) == []
