"""Ten variants of one base image, built by `fg-image batch` and uploaded, are stored in little more than
one image: the tar.zst the generate stage writes (zstd --rsyncable) dedups by content-defined chunks."""

from __future__ import annotations

import pytest
from support.built_images import cache_dir
from support.cli import json_out

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
EXTRAS = ["hello", "tree", "bc", "jq", "lsof", "psmisc", "less", "file", "nano", "time"]
VARIANT = """\
name: variant-{{ extra }}
vars: {extra: hello}
os: {family: debian, release: bookworm, arch: amd64}
variant: minbase
packages: ["{{ extra }}"]
formats: [tar.zst]
"""


def test_ten_one_package_variants_take_at_most_one_and_a_half_images(fg, db, tmp_path):
    (tmp_path / "variant.yaml").write_text(VARIANT)
    (tmp_path / "batch.yaml").write_text("matrix:\n  - recipe: variant.yaml\n    axes:\n"
                                         f"      vars.extra: [{', '.join(EXTRAS)}]\n")
    # the test cache's data dir: its base system and packages are shared with other runs (and locked)
    env = {"RAIN_DATA_DIR": str(cache_dir() / "variants-data")}
    built = fg("batch", str(tmp_path / "batch.yaml"), "--jobs", "2", env=env, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]

    images = json_out(fg("list", "--json"))
    assert sorted(i["name"] for i in images) == sorted(f"variant-{e}" for e in EXTRAS)
    stored = sum(c["size"] for c in db.chunks.find())
    largest = max(i["size"] for i in images)
    logical = sum(i["size"] for i in images)
    assert stored <= 1.5 * largest, f"{stored} bytes stored for ten images of up to {largest} ({logical} logical)"
    status = json_out(fg("repo", "status", "--json"))
    assert status["stored_bytes"] == stored and status["logical_bytes"] == logical
    assert status["dedup_ratio"] >= logical / (1.5 * largest)
