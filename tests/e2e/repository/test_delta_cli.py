"""`fg-image upload --parent/--base` and `download --seed` through `fg-image serve`, and the chunk cache
the downloads fill (`cache list`, `cache prune --kind chunks`)."""

from __future__ import annotations

import hashlib
import random

import pytest
from support.cli import json_out

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
MiB = 1 << 20


def test_a_variant_goes_up_and_down_as_its_changed_chunks(fg, remote_env, rain_env, tmp_path):
    rng = random.Random(11)
    base = rng.randbytes(24 * MiB)
    at = rng.randrange(len(base))
    derived = base[:at] + rng.randbytes(5000) + base[at:]
    (tmp_path / "base.raw").write_bytes(base)
    (tmp_path / "variant.raw").write_bytes(derived)

    def ok(*args: str) -> str:
        result = fg(*args, env=remote_env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    parent = json_out(fg("upload", "base.raw", "--json", env=remote_env, cwd=tmp_path))["id"]
    child = json_out(fg("upload", "variant.raw", "--parent", parent, "--json", env=remote_env, cwd=tmp_path))
    assert child["parent"] == parent
    history = json_out(fg("history", child["id"], "--json", env=remote_env))
    assert [e["detail"]["new_bytes"] for e in history if e["action"] == "upload"][0] <= 0.15 * len(derived)

    said = ok("download", child["id"], "-o", "got.raw", "--seed", "base.raw")
    assert "fetched" in said and "from seeds and the chunk cache" in said
    assert hashlib.sha256((tmp_path / "got.raw").read_bytes()).digest() == hashlib.sha256(derived).digest()

    cached = [e for e in json_out(fg("cache", "list", "--json", env=remote_env)) if e["kind"] == "chunks"]
    assert len(cached) == 1 and cached[0]["size"] > 0
    again = ok("download", child["id"], "-o", "again.raw")  # no seed: the cache has the changed chunks only
    assert "fetched" in again
    ok("cache", "prune", "--kind", "chunks", "--yes")
    assert [e for e in json_out(fg("cache", "list", "--json", env=remote_env)) if e["kind"] == "chunks"] == []


@pytest.mark.parametrize(("args", "words"), [
    (["download", "0123456789ab", "--seed", "nowhere.raw"], "no such seed file: nowhere.raw"),
    (["upload", "file.raw", "--base", "../users"], "bad --base id '../users'"),
    (["upload", "file.raw", "--parent", "nope"], "parent"),
])
def test_bad_delta_flags_are_refused_in_one_line(fg, remote_env, tmp_path, args, words):
    (tmp_path / "file.raw").write_bytes(b"x" * 1000)
    result = fg(*args, env=remote_env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
