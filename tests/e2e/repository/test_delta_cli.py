"""`fg-image upload --parent/--base` and `download --seed` through `fg-image serve`, and the chunk cache
the downloads fill (`cache list`, `cache prune --kind chunks`)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import FG_IMAGE, json_out
from support.service import start_service

from rain.config import load_settings
from rain.repository import embedded
from rain.repository.connect import open_store

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


def test_a_download_cut_off_by_the_database_dying_resumes_once_it_is_back(fg, rain_env, tmp_path):
    """The service's own embedded database, SIGKILLed while a delta download runs: the download stops with
    one line and leaves no partial file; once database and service are back, it fetches only what its
    chunk cache lacks and verifies."""
    site = {k: v for k, v in rain_env.items() if k not in ("RAIN_MONGO_URI", "RAIN_MONGO_DB")}
    site["RAIN_DATA_DIR"] = str(tmp_path / "site")
    service = start_service(site, tmp_path / "serve.log")
    try:
        token = open_store(load_settings(environ=site), "admin").issue_token("admin")
        client = {"RAIN_REPO_URL": service.url, "RAIN_TOKEN": token}
        data = random.Random(21).randbytes(96 * MiB)
        (tmp_path / "big.raw").write_bytes(data)
        image = json_out(fg("upload", str(tmp_path / "big.raw"), "--json", env=client))
        out = tmp_path / "got.raw"
        proc = subprocess.Popen([str(FG_IMAGE), "download", image["id"], "-o", str(out)],
                                env={**rain_env, **client}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        cache = Path(rain_env["RAIN_DATA_DIR"]) / "cache" / "chunks"
        deadline = time.monotonic() + 120
        while sum(1 for p in cache.glob("*/*") if p.is_file()) < 16:
            assert proc.poll() is None and time.monotonic() < deadline, "the download ended too soon"
            time.sleep(0.02)
        os.kill(embedded.status(tmp_path / "site").pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode != 0 and len(err.strip().splitlines()) == 1, err
        # mid-stream the answer breaks off; between requests it is a 503 that says so (was a bare HTTP 500)
        assert "the repository database failed" in err or "broke off" in err, err
        assert not out.exists() and not list(tmp_path.glob("got.raw.part*")), "nothing half-downloaded stays"

        service.stop()  # a service keeps its connection to the old server: restart both
        service = start_service(site, tmp_path / "serve-again.log")
        again = fg("download", image["id"], "-o", str(out), env={"RAIN_REPO_URL": service.url, "RAIN_TOKEN": token})
        assert again.returncode == 0, again.stderr
        assert "from seeds and the chunk cache" in again.stderr, again.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == image["sha256"]
    finally:
        service.stop()
        embedded.stop(tmp_path / "site", timeout=5)
