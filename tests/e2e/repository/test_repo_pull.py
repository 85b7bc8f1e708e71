"""`fg-image repo pull` between two real `fg-image serve` services on 127.0.0.1, each on its own
database: ids, owners, lineage and checksums arrive intact, only missing chunks move, a second pull
moves nothing, what the token may not read is refused, and a pull killed with SIGKILL resumes."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import FG_IMAGE, json_out
from support.mongo import mongo_client
from support.service import Service, start_service

from rain.config import load_settings
from rain.repository import embedded
from rain.repository.connect import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
MiB = 1 << 20


def fg_without_rain_env(base: dict[str, str], *args: str, env: dict[str, str] | None = None) -> Any:
    """fg-image on an environment of its own (the `fg` fixture's always carries the test's database)."""
    return subprocess.run([str(FG_IMAGE), *args], env={**base, **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


class Site:
    def __init__(self, env: dict[str, str], service: Service) -> None:
        self.env, self.service = env, service
        self.store = open_store(load_settings(environ=env), "admin")

    def token(self, user: str) -> str:
        if user != "admin" and user not in {u.name for u in self.store.list_users()}:
            self.store.add_user(user)
        return self.store.issue_token(user)


@pytest.fixture
def sites(rain_env: dict[str, str], service: Service, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    """The main site (the `service` fixture's database) and a second site on a database of its own."""
    db_b = "t_" + uuid.uuid4().hex[:16]
    env_b = {**rain_env, "RAIN_MONGO_DB": db_b}
    service_b = start_service(env_b, tmp_path / "serve-b.log")
    try:
        yield Site(rain_env, service), Site(env_b, service_b)
    finally:
        service_b.stop()
        with mongo_client(rain_env["RAIN_MONGO_URI"]) as client:
            client.drop_database(db_b)


def upload(fg: Any, site: Site, token: str, path: Path, *args: str) -> dict[str, Any]:
    result = fg("upload", str(path), *args, "--json", env={"RAIN_REPO_URL": site.service.url, "RAIN_TOKEN": token})
    assert result.returncode == 0, result.stderr
    return json_out(result)


def pull(fg: Any, main: Site, second: Site, token: str, *args: str, ok: bool = True,
         env: dict[str, str] | None = None) -> Any:
    result = fg("repo", "pull", "--from", main.service.url, *args, "--json",
                env={**(env or second.env), "RAIN_PULL_TOKEN": token})
    assert (result.returncode == 0) == ok, result.stderr
    return json_out(result) if ok else result


def test_pull_copies_an_image_and_its_parent_moving_only_new_chunks(fg, sites, tmp_path):
    main, second = sites
    alice, bob = main.token("alice"), main.token("bob")
    rng = random.Random(5)
    base = rng.randbytes(20 * MiB)
    at = rng.randrange(len(base))
    (tmp_path / "base.raw").write_bytes(base)
    (tmp_path / "variant.raw").write_bytes(base[:at] + rng.randbytes(5000) + base[at:])
    (tmp_path / "secret.raw").write_bytes(rng.randbytes(MiB))
    parent = upload(fg, main, alice, tmp_path / "base.raw", "--tag", "gold", "--description", "the base")
    child = upload(fg, main, alice, tmp_path / "variant.raw", "--parent", parent["id"])
    secret = upload(fg, main, bob, tmp_path / "secret.raw")

    report = pull(fg, main, second, alice, child["id"])
    got = {p["id"]: p for p in report["images"]}
    assert [p["id"] for p in report["images"]] == [parent["id"], child["id"]], "parents come first"
    assert all(p["outcome"] == "pulled" for p in report["images"])
    assert got[parent["id"]]["fetched_bytes"] == len(base)
    assert got[child["id"]]["fetched_bytes"] <= 0.15 * child["size"], "only the variant's new chunks move"
    assert got[parent["id"]]["created_owner"], "alice had no account at the second site"

    # the second site's own service serves them under the same ids, owner, lineage and bytes
    admin_b = {"RAIN_REPO_URL": second.service.url, "RAIN_TOKEN": second.token("admin")}
    shown = json_out(fg("show", child["id"], "--json", env=admin_b))
    assert (shown["owner"], shown["parent"], shown["sha256"]) == ("alice", parent["id"], child["sha256"])
    assert shown["origin"]["url"] == main.service.url
    base_b = json_out(fg("show", parent["id"], "--json", env=admin_b))
    assert (base_b["tags"], base_b["description"], base_b["visibility"]) == (["gold"], "the base", "private")
    assert [d["id"] for d in base_b["derived"]] == [child["id"]]
    alice_b = {"RAIN_REPO_URL": second.service.url, "RAIN_TOKEN": second.token("alice")}
    result = fg("download", child["id"], "-o", str(tmp_path / "got.raw"), env=alice_b)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((tmp_path / "got.raw").read_bytes()).hexdigest() == child["sha256"]
    users_b = {u.name: u for u in second.store.list_users()}
    assert users_b["alice"].used_bytes == parent["size"] + child["size"], "quota charges the logical size"
    pulls = [e for e in json_out(fg("history", "--json", env=admin_b)) if e["action"] == "pull"]
    assert {e["image_id"] for e in pulls} == {parent["id"], child["id"]}

    # a second pull moves nothing, and does not even ask the source for chunk lists
    downloads_before = len([e for e in main.store.history(child["id"]) if e.action == "download"])
    again = pull(fg, main, second, alice, child["id"])
    assert [p["outcome"] for p in again["images"]] == ["present", "present"]
    assert sum(p["fetched_bytes"] for p in again["images"]) == 0
    assert len([e for e in main.store.history(child["id"]) if e.action == "download"]) == downloads_before

    # bob's private image is not alice's to pull: refused in one line, nothing arrives
    refused = pull(fg, main, second, alice, secret["id"], ok=False)
    assert refused.returncode == 3 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr  # not found
    assert "may not read it" in refused.stderr
    assert second.store.images.count_documents({"_id": secret["id"]}) == 0
    # nor does a query find it
    everything = pull(fg, main, second, alice, "--all")
    assert secret["id"] not in {p["id"] for p in everything["images"]}

    # an image quarantined at its source (it failed vetting there) arrives quarantined
    (tmp_path / "bad.raw").write_bytes(rng.randbytes(MiB))
    bad = upload(fg, main, alice, tmp_path / "bad.raw")
    main.store.images.update_one({"_id": bad["id"]}, {"$set": {"status": "quarantined",
                                                                "quarantined": ["openstack"]}})
    assert [p["outcome"] for p in pull(fg, main, second, alice, bad["id"])["images"]] == ["pulled"]
    arrived = second.store.images.find_one({"_id": bad["id"]})
    assert (arrived["status"], arrived["quarantined"]) == ("quarantined", ["openstack"])


def test_pull_killed_midway_resumes_to_a_verified_image(fg, sites, tmp_path):
    main, second = sites
    alice = main.token("alice")
    data = random.Random(9).randbytes(96 * MiB)
    (tmp_path / "big.raw").write_bytes(data)
    image = upload(fg, main, alice, tmp_path / "big.raw")

    proc = subprocess.Popen([str(FG_IMAGE), "repo", "pull", "--from", main.service.url, image["id"]],
                            env={**second.env, "RAIN_PULL_TOKEN": alice}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stored = second.store.db["chunks"]
    deadline = time.monotonic() + 120
    while stored.count_documents({}) < 24:  # a batch or two in: 16 MiB at most, 64 chunks, per request
        assert proc.poll() is None, "the pull finished before it could be killed: make the image bigger"
        assert time.monotonic() < deadline, "the pull never began to store chunks"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert second.store.images.find_one({"_id": image["id"]})["status"] == "uploading", "no half image shows"
    assert fg("show", image["id"], env=second.env).returncode != 0

    report = pull(fg, main, second, alice, image["id"])
    (done,) = report["images"]
    assert done["resumed"] and 0 < done["fetched_bytes"] < len(data), done
    gc = json_out(fg("repo", "gc", "--json", env=second.env))
    assert (gc["chunks_removed"], gc["counts_corrected"], gc["files_removed"]) == (0, 0, 0), gc
    result = fg("download", image["id"], "-o", str(tmp_path / "back.raw"), env=second.env)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256((tmp_path / "back.raw").read_bytes()).hexdigest() == image["sha256"]


def test_source_killed_midway_fails_in_one_line_and_leaves_nothing(fg, sites, tmp_path):
    main, second = sites
    alice = main.token("alice")
    (tmp_path / "big.raw").write_bytes(random.Random(3).randbytes(96 * MiB))
    image = upload(fg, main, alice, tmp_path / "big.raw")
    proc = subprocess.Popen([str(FG_IMAGE), "repo", "pull", "--from", main.service.url, image["id"]],
                            env={**second.env, "RAIN_PULL_TOKEN": alice}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while second.store.db["chunks"].count_documents({}) < 24:
        assert proc.poll() is None and time.monotonic() < deadline, "the pull ended before the source was killed"
        time.sleep(0.05)
    main.service.proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 8 and len(err.strip().splitlines()) == 1, err  # unreachable
    assert main.service.url in err, err  # "cannot reach the source…", or "chunks … from it broke off"
    assert second.store.images.count_documents({"_id": image["id"]}) == 0, "the half-pulled image is gone"
    assert second.store.db["chunks"].count_documents({}) == 0, "its chunks went with it"
    gc = json_out(fg("repo", "gc", "--json", env=second.env))
    assert (gc["chunks_removed"], gc["counts_corrected"], gc["files_removed"]) == (0, 0, 0), gc


def test_database_killed_midway_pull_resumes_once_it_is_back(fg, sites, rain_env, tmp_path):
    """The receiving site's own embedded database, SIGKILLed part-way through a pull: the pull stops with
    one line, and the next one (which starts the database again) resumes to a verified image."""
    main, _ = sites
    alice = main.token("alice")
    data = random.Random(4).randbytes(96 * MiB)
    (tmp_path / "big.raw").write_bytes(data)
    image = upload(fg, main, alice, tmp_path / "big.raw")
    site = {k: v for k, v in rain_env.items() if k not in ("RAIN_MONGO_URI", "RAIN_MONGO_DB")}
    site.update({"RAIN_DATA_DIR": str(tmp_path / "site-c"), "RAIN_PULL_TOKEN": alice, "RAIN_TIMEOUT": "5"})
    fg = functools.partial(fg_without_rain_env, site)
    try:
        assert fg("list", env=site).returncode == 0  # starts the site's embedded database
        proc = subprocess.Popen([str(FG_IMAGE), "repo", "pull", "--from", main.service.url, image["id"]], env=site,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db_status = embedded.status(tmp_path / "site-c")
        with mongo_client(db_status.uri) as client:
            chunks = client["rain"]["chunks"]
            deadline = time.monotonic() + 120
            while chunks.count_documents({}) < 24:
                assert proc.poll() is None and time.monotonic() < deadline, "the pull ended too soon"
                time.sleep(0.05)
        os.kill(db_status.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode != 0 and len(err.strip().splitlines()) == 1, err

        report = pull(fg, main, Site.__new__(Site), alice, image["id"], env=site)
        (done,) = report["images"]
        assert done["resumed"] and done["fetched_bytes"] < len(data), done
        gc = json_out(fg("repo", "gc", "--json", env=site))
        assert (gc["chunks_removed"], gc["counts_corrected"], gc["files_removed"]) == (0, 0, 0), gc
        result = fg("download", image["id"], "-o", str(tmp_path / "back.raw"), env=site)
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256((tmp_path / "back.raw").read_bytes()).hexdigest() == image["sha256"]
    finally:
        embedded.stop(tmp_path / "site-c", timeout=5)


@pytest.mark.parametrize(("args", "words"), [
    ([], "name the images to pull"),
    (["--from", "ftp://x", "0123456789ab"], "bad repository URL"),
    (["--from", "http://127.0.0.1:9", "0123456789ab"], "cannot reach the source repository"),
])
def test_bad_pull_requests_are_one_line_errors(fg, rain_env, args, words):
    if not args:
        args = ["--from", "http://127.0.0.1:9"]
    result = fg("repo", "pull", *args)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr, result.stderr
