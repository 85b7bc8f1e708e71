"""Ten variants of one base image, built by `fg-image batch` and uploaded, store little more than one.

generate's tar.zst is in package order with its times clamped to its base system's packages' date, in
independent zstd frames that the repository keeps whole in its chunks (rain.image.tarball), so a
one-package variant adds about its package and dpkg's bookkeeping. bench/dedup.py prints the figures
for tar.zst, raw and qcow2."""

from __future__ import annotations

import pytest
from support.built_images import cache_dir
from support.cli import RECIPES, json_out

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
EXTRAS = ["hello", "tree", "bc", "jq", "lsof", "psmisc", "less", "file", "nano", "time"]


def test_ten_one_package_variants_share_their_chunks(fg, db, tmp_path):
    (tmp_path / "batch.yaml").write_text(f"matrix:\n  - recipe: {RECIPES / 'debian-variant.yaml'}\n    axes:\n"
                                         f"      vars.extra: [{', '.join(EXTRAS)}]\n")
    # the test cache's data dir: its base system and packages are shared with other runs (and locked)
    env = {"RAIN_DATA_DIR": str(cache_dir() / "variants-data")}
    built = fg("batch", str(tmp_path / "batch.yaml"), "--jobs", "2", env=env, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]

    images = json_out(fg("list", "--json"))
    assert sorted(i["name"] for i in images) == sorted(f"variant-{e}" for e in EXTRAS)
    stored = sum(c["size"] for c in db.chunks.find())
    logical = sum(i["size"] for i in images)
    largest = max(i["size"] for i in images)
    assert stored <= 1.5 * largest, f"{stored} bytes stored for ten variants of {largest} bytes at most"
    status = json_out(fg("repo", "status", "--json"))
    assert (status["stored_bytes"], status["logical_bytes"]) == (stored, logical)
    assert status["dedup_ratio"] == round(logical / stored, 3) > 6
    # every variant's tar carries the same clamping date: its base system's, recorded in its provenance
    epochs = {json_out(fg("show", i["id"], "--json"))["provenance"]["source_date_epoch"] for i in images}
    assert len(epochs) == 1 and isinstance(epochs.pop(), int)
    uploads = [e for e in json_out(fg("history", "--json", "--limit", "50")) if e["action"] == "upload"]
    assert len(uploads) == len(EXTRAS) and sum(e["detail"]["new_bytes"] for e in uploads) == stored
