"""Repository throughput: the direct Store, the service, raw GridFS and cp, on the same file.

    .venv/bin/python bench/repository.py [--sizes 16,64,256] [--rounds 3] [--catalog 100000] [--json FILE]

Starts its own embedded SecantusDB server and `fg-image serve` in a temporary
directory, moves a file of random bytes of each size up and down each way,
prints MiB/s (the median of --rounds turns, each led by the next path, with dirty pages synced
before each timed step) and each figure as a ratio against
raw pymongo GridFS and against `cp`, then removes everything it made. No thresholds: it reports. The sizes
show how the cost grows with the image (bench/report.py plots it).

(a) store    rain.repository.store.Store.put/get (sha256 while moving, quota, catalog)
(b) service  rain.repository.client.Client <-> `fg-image serve` over HTTP on 127.0.0.1: a delta
             upload of the file (nothing of it stored before) and a cold delta download (no seed,
             no chunk cache), as `fg-image upload` and `download` do
(c) gridfs   pymongo GridFSBucket upload_from_stream/download_to_stream, 1 MiB chunks
(d) cp       `cp` of the file to a new file and back (page cache warm, as for the others)

Then the catalog at scale: --catalog N image records (default 100,000; 0 skips it) are seeded
straight into a database of their own (one a minute, up to now; owners, families, tags and
visibility spread over them), and a user's `list` (newest 100, unfiltered and filtered) and `show`
through the service are timed against the plain query with the access rule on the same server
(what Rain sent before listing.py).
"""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import gridfs
import requests
from common import Row, Section, Series, add_json_option, bench_env, numbers, write_json

from rain.config import load_settings
from rain.repository import client_delta, embedded
from rain.repository.chunk_cache import ChunkCache
from rain.repository.client import Client
from rain.repository.connect import open_database, open_store
from rain.repository.listing import name_words
from rain.repository.models import ImageMeta, ImageQuery

MiB = 1 << 20
Results = dict[str, tuple[float, float]]
"""Seconds (up, down) for each path: store, service, gridfs, cp."""
PEERS = {"gridfs": "raw GridFS (pymongo)", "cp": "cp"}


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def settle(*stale: Path) -> None:
    """Before a timed step: no dirty pages of an earlier step still being written back, and no earlier
    output left to truncate, so no path pays for the one that ran before it."""
    for path in stale:
        path.unlink(missing_ok=True)
    os.sync()


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    fg_image = Path(sys.executable).parent / "fg-image"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(fg_image), "serve", "--port", str(port)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fg-image serve exited: {log.read_text()}")
        try:
            if requests.get(url + "/healthz", timeout=2).ok:
                return proc, url
        except requests.RequestException:  # not listening yet, or busy (a checkpoint after seeding)
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("fg-image serve did not start")


def bench_repo(repo, src: Path, out: Path, size: int) -> tuple[float, float]:
    meta = ImageMeta(name="bench")
    settle()
    with open(src, "rb") as f:
        up_seconds = timed(lambda: repo.put(f, meta, size))
    image_id = repo.list()[0].id
    settle(out)
    if isinstance(repo, Client):  # what `fg-image download` does: chunks, several at once; a cold cache
        down_seconds = timed(lambda: client_delta.get(repo, image_id, out, [], ChunkCache(out.parent / "none", 0),
                                                      None))
    else:
        with open(out, "wb") as f:
            down_seconds = timed(lambda: repo.get(image_id, f))
    repo.remove(image_id)
    return up_seconds, down_seconds


def bench_gridfs(bucket: gridfs.GridFSBucket, src: Path, out: Path) -> tuple[float, float]:
    ids = []
    settle()
    with open(src, "rb") as f:
        up = timed(lambda: ids.append(bucket.upload_from_stream("bench", f)))
    settle(out)
    with open(out, "wb") as f:
        down = timed(lambda: bucket.download_to_stream(ids[0], f))
    bucket.delete(ids[0])
    return up, down


def bench_cp(src: Path, out: Path) -> tuple[float, float]:
    copy = src.with_name("copy.raw")
    settle()
    up = timed(lambda: subprocess.run(["cp", str(src), str(copy)], check=True))
    settle(out)
    down = timed(lambda: subprocess.run(["cp", str(copy), str(out)], check=True))
    copy.unlink()
    return up, down


def print_table(size_mib: int, results: Results) -> None:
    rate = {name: (size_mib / u, size_mib / d) for name, (u, d) in results.items()}
    print(f"\n{size_mib} MiB, MiB/s (ratio = this / reference)\n")
    header = f"{'path':<9} {'up MiB/s':>9} {'down MiB/s':>11} {'up/gridfs':>10} {'down/gridfs':>12} " \
             f"{'up/cp':>7} {'down/cp':>8}"
    print(header)
    print("-" * len(header))
    gu, gd = rate["gridfs"]
    cu, cd = rate["cp"]
    for name, (u, d) in rate.items():
        print(f"{name:<9} {u:>9.1f} {d:>11.1f} {u / gu:>10.2f} {d / gd:>12.2f} {u / cu:>7.2f} {d / cd:>8.2f}")


def section(by_size: dict[int, Results], rounds: int) -> Section:
    """MiB/s rows (the ratio is Rain's rate over the reference's: above 1 is faster) and seconds vs size."""
    rows = []
    for mib, results in by_size.items():
        rate = {name: (mib / u, mib / d) for name, (u, d) in results.items()}
        for path, peer in (("store", "gridfs"), ("service", "gridfs"), ("gridfs", "cp")):
            for i, way in enumerate(("upload", "download")):
                rows.append(Row(f"{path} {way}, {mib} MiB", rate[path][i], PEERS[peer], rate[peer][i], unit="MiB/s"))
    series = [Series(f"service {way} seconds vs size (peer: raw GridFS)", "image size (MiB)", f"{way} seconds",
                     [(mib, r["service"][i]) for mib, r in by_size.items()],
                     [(mib, r["gridfs"][i]) for mib, r in by_size.items()])
              for i, way in enumerate(("upload", "download"))]
    notes = ["store: Store.put/get in this process; service: Client <-> `fg-image serve` over HTTP on 127.0.0.1; "
             "gridfs: pymongo GridFSBucket, 1 MiB chunks; cp: the file copied and back (page cache warm)",
             f"embedded SecantusDB server; {os.cpu_count()} cores; each figure the median of {rounds} rounds, "
             "the paths taking turns, each round led by the next (a fresh file each round); dirty pages synced "
             "and the last output removed before each timed step"]
    return Section("repository: throughput", rows, series, notes)


def seed_catalog(db, n: int) -> None:
    """n image records, one a minute up to now, in batches (not uploaded: no bytes behind them), and n
    history events."""
    rnd = random.Random(13)
    vetted = random.Random(14)  # its own, so the other fields are seeded as before
    newest = datetime.now(UTC)
    batch = []
    for i in range(n):
        stamp = newest - timedelta(minutes=n - i)
        failed = rnd.random() < 0.01  # one in a hundred failed vetting for ec2; three in a hundred are on openstack
        passed = not failed and vetted.random() < 0.02  # two in a hundred passed for hpc
        registered = [{"target": "openstack", "site": "", "remote_id": secrets.token_hex(8), "when": stamp,
                       "detail": {}, "by": "bench"}] if rnd.random() < 0.03 else []
        batch.append({
            "_id": secrets.token_hex(6), "name": f"img-{i % 5000}", "name_words": name_words(f"img-{i % 5000}"),
            "owner": f"user{rnd.randrange(200)}",
            "os": {"family": rnd.choice(["debian", "ubuntu", "rocky", "alma"]), "release": "12", "arch": "x86_64"},
            "format": "tar.zst", "size": 1 << 30, "sha256": "0" * 64,
            "status": "quarantined" if failed else "available",
            "visibility": "public" if rnd.random() < 0.1 else "private", "shared_with": [], "tags": [f"t{i % 50}"],
            "description": "", "created": stamp, "updated": stamp, "last_access": None, "access_count": 0,
            "parent": None, "provenance": None,
            "vetting": {"ec2": {"verdict": "fail"}} if failed else {"hpc": {"verdict": "pass"}} if passed else {},
            "quarantined": ["ec2"] if failed else [], "verdict": "fail" if failed else "pass" if passed else "none",
            "accepted_rules": {}, "registrations": registered})
        if len(batch) == 1000:
            db.images.insert_many(batch)
            batch = []
    if batch:
        db.images.insert_many(batch)
    # as many history events (one per upload, download, share...), a few a minute, by the same users
    ids = [d["_id"] for d in db.images.find({"created": {"$gte": newest - timedelta(days=1)}}, {"_id": 1})]
    for start in range(0, n, 1000):
        db.events.insert_many([
            {"when": newest - timedelta(seconds=60 * (n - i) / 3), "user": f"user{rnd.randrange(200)}",
             "action": rnd.choice(["upload", "download", "download", "share"]), "image_id": rnd.choice(ids),
             "image_name": "img", "detail": {}} for i in range(start, min(n, start + 1000))])


def p95(times: list[float]) -> float:
    """The 95th percentile of timings."""
    times = sorted(times)
    return times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def interleaved_ms(steps: list[Callable[[], object]], runs: int) -> list[list[float]]:
    """`runs` timings in ms of each step, taken in turns (a stretch of background work on the server,
    such as a checkpoint after the seeding, then slows every step alike, not the one that ran first),
    after one untimed run of each (the first opens the service's connections)."""
    for step in steps:
        step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(runs):
        for step, got in zip(steps, times, strict=True):
            got.append(timed(step) * 1000)
    return times


PROVENANCE = {"builder": "local", "recipe_hash": "0" * 64,
              "packages": [{"name": f"package-name-{i}", "version": f"1.{i}.3-2+deb12u1", "arch": "amd64"}
                           for i in range(150)]}
"""About what `generate` records for a small Debian image: 10 KB."""
LIST_BOUND_MS = 50.0
"""A filtered `list` of 100,000 images through the service answers within this, at the 95th percentile."""


PAGE_BOUND_MS = 200.0
"""The web catalog's first page, filtered or not, at 100,000 images: server time within this."""


def web_catalog_rows(url: str, token: str, n: int) -> list[Row]:
    """The web catalog's first page (50 images) for a signed-in user, unfiltered and filtered: the server
    time the page reports (Server-Timing), p95 of 20, against the bound."""
    session = requests.Session()
    signed = session.post(url + "/signin", data={"token": token}, headers={"Origin": url}, allow_redirects=False)
    assert signed.status_code == 303, signed.text

    def server_ms(params: dict[str, str]) -> float:
        answer = session.get(url + "/", params=params)
        answer.raise_for_status()
        return float(answer.headers["server-timing"].split("dur=")[1])
    rows = []
    for what, params in (("web catalog, first page", {}),
                         ("web catalog, first page, os family rocky", {"os_family": "rocky"}),
                         ("web catalog, first page, search 'img 4242' (20 images, 2 readable)",
                          {"search": "img 4242"}),
                         ("web catalog, first page, search 'img 42' (2% of images)", {"search": "img 42"}),
                         ("web catalog, first page, vetting failed (1% of images)", {"verdict": "fail"}),
                         ("web catalog, first page, vetting passed (2% of images)", {"verdict": "pass"}),
                         ("web catalog, first page, private images only", {"visibility": "private"}),
                         ("web catalog, first page, registered on openstack (3%)", {"registered": "openstack"})):
        server_ms(params)  # one untimed
        times = [server_ms(params) for _ in range(20)]
        print(f"{what}: server time p95 {p95(times):.1f} ms", file=sys.stderr)
        rows.append(Row(f"{what}, {n:,} images, a user (server time, p95 of 20)", p95(times),
                        "the bound for a catalog page", PAGE_BOUND_MS, unit="ms", goal=1.0))
    rows.append(deep_page_row(session, url, server_ms, n))
    return rows


DEEP_PAGE = 200


def deep_page_row(session: requests.Session, url: str, server_ms: Callable[[dict[str, str]], float], n: int) -> Row:
    """Page 200 of the unfiltered catalog reached by following "next" (each carries the last image shown)
    against the same page by its number alone (skipping the 9,950 images before it)."""
    link, found = "/", None
    for _ in range(DEEP_PAGE - 1):
        page = session.get(url + link)
        page.raise_for_status()
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        assert found, "the catalog has 200 pages for the user"
        link = html.unescape(found.group(1))
    params = dict(parse_qsl(urlsplit(link).query))
    assert params.get("page") == str(DEEP_PAGE) and "after" in params, link
    by_link = interleaved_ms([lambda: server_ms(params)], 20)[0]
    by_number = [server_ms({"page": str(DEEP_PAGE)}) for _ in range(3)]
    print(f"web catalog, page {DEEP_PAGE}: by the next link p95 {p95(by_link):.1f} ms; by its number "
          f"p95 {p95(by_number):.1f} ms", file=sys.stderr)
    return Row(f"web catalog, page {DEEP_PAGE} by the next link, {n:,} images, a user (server time, p95 of 20)",
               p95(by_link), f"page {DEEP_PAGE} by its number (skipping), same service (p95 of 3)",
               p95(by_number), unit="ms")


def catalog_section(env: dict[str, str], work: Path, n: int) -> Section:
    """list and show for a user on n records, through the service, against the plain queries."""
    cat_env = {**env, "RAIN_MONGO_DB": "bench_catalog"}
    settings = load_settings(environ=cat_env)
    admin = open_store(settings, "bench")  # the first user (the admin); makes the indexes
    admin.add_user("user7")
    db = open_database(settings)
    started = time.monotonic()
    seed_catalog(db, n)
    print(f"seeded {n} image records in {time.monotonic() - started:.0f}s", file=sys.stderr)
    service, url = start_service(cat_env, work / "serve-catalog.log")
    try:
        client = Client(url, admin.issue_token("user7"), timeout=600)
        public = db.images.find_one({"visibility": "public"})["_id"]
        rule = {"status": {"$ne": "uploading"},
                "$or": [{"owner": "user7"}, {"visibility": "public"}, {"shared_with": "user7"}]}
        newest = [("created", -1), ("_id", 1)]
        cases = [
            ("list, newest 100", lambda: client.list(ImageQuery()),
             lambda: list(db.images.find(rule).sort(newest).limit(100))),
            ("list --os-family rocky, newest 100", lambda: client.list(ImageQuery(os_family="rocky")),
             lambda: list(db.images.find({**rule, "os.family": "rocky"}).sort(newest).limit(100))),
            ("show one public image", lambda: client.show(public),
             lambda: db.images.find_one({"_id": public, **rule})),
            ("history, newest 100 of the user's events", lambda: client.history(limit=100),
             lambda: list(db.events.find({"user": "user7"}).sort([("when", -1), ("_id", -1)])
                          .hint([("when", -1)]).limit(100))),  # the only index history had before
        ]
        rows = []
        rain_times = interleaved_ms([rain for _, rain, _ in cases], 20)
        for (what, _, plain), times in zip(cases, rain_times, strict=True):
            rain_ms, plain_ms = p95(times), p95([timed(plain) * 1000 for _ in range(3)])
            print(f"{what}: service p95 {rain_ms:.1f} ms; plain query {plain_ms:.1f} ms", file=sys.stderr)
            history = what.startswith("history")
            peer = "the plain sorted query on the time index" if history else "the plain query with the access rule"
            rows.append(Row(f"{what}, {n:,} {'events' if history else 'images'}, a user (p95 of 20)", rain_ms,
                            f"{peer}, same server (p95 of 3)", plain_ms, unit="ms"))
            if "--os-family" in what:  # the bound a filtered listing must keep, at this scale, on this server
                rows.append(Row(f"{what}, {n:,} images, a user (p95 of 20)", rain_ms,
                                "the bound for a filtered listing", LIST_BOUND_MS, unit="ms", goal=1.0))
        rows.extend(web_catalog_rows(url, admin.issue_token("user7"), n))
        # and as built images are: the newest records (all a listing reads) with a generated provenance
        heavy = db.images.update_many({"created": {"$gte": datetime.now(UTC) - timedelta(days=4)}},
                                      {"$set": {"provenance": PROVENANCE}}).modified_count
        what = f"list, newest 100, the newest {heavy:,} records with a 150-package provenance"
        times = interleaved_ms([cases[0][1]], 20)[0]
        rain_ms, plain_ms = p95(times), p95([timed(cases[0][2]) * 1000 for _ in range(3)])
        print(f"{what}: service p95 {rain_ms:.1f} ms; plain query {plain_ms:.1f} ms", file=sys.stderr)
        rows.append(Row(f"{what}, a user (p95 of 20)", rain_ms,
                        "the plain query with the access rule, same server (p95 of 3)", plain_ms, unit="ms"))
    finally:
        service.terminate()
        service.wait(30)
    notes = [f"{n:,} seeded records, one a minute up to now, 200 owners, a tenth public, one in a hundred "
             "quarantined (failed vetting), three in a hundred registered on openstack; the user owns about "
             f"one in 200 and reads the public ones; {n:,} history events, three a minute, the user's about one in 200",
             "service: Client <-> `fg-image serve` on 127.0.0.1, the answer parsed; plain query: pymongo on the "
             "same embedded server, with the access rule's $or as Rain sent it before it read indexes only; for "
             "history, the user's events by the time index, the only one it had before"]
    return Section("repository: the catalog at scale", rows, [], notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=numbers, default=[16, 64, 256],
                        help="file sizes in MiB, comma-separated (default 16,64,256)")
    parser.add_argument("--catalog", type=int, default=100_000, metavar="N",
                        help="image records for the catalog figures (default 100000; 0 skips them)")
    parser.add_argument("--variants", type=int, default=10, metavar="N",
                        help="one-package variants built for the dedup figures (default 10; 0 skips them; "
                             "needs root and the package mirror)")
    parser.add_argument("--rounds", type=int, default=3, metavar="N",
                        help="times each path moves each file, taking turns; the median is reported (default 3)")
    add_json_option(parser)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rain-bench-"))
    service = None
    try:
        print(f"starting the embedded server and the service in {work}", file=sys.stderr)
        server = embedded.ensure_running(work / "data")
        env = {**bench_env(work / "absent.toml"), "RAIN_MONGO_URI": str(server.uri),
               "RAIN_DATA_DIR": str(work / "data"), "RAIN_USER": "bench"}
        store = open_store(load_settings(environ={**env, "RAIN_MONGO_DB": "bench_store"}), "bench")
        service_env = {**env, "RAIN_MONGO_DB": "bench_service"}
        token = open_store(load_settings(environ=service_env), "bench").issue_token("bench")
        service, url = start_service(service_env, work / "serve.log")
        client = Client(url, token, timeout=600)
        bucket = gridfs.GridFSBucket(open_database(load_settings(environ={**env, "RAIN_MONGO_DB": "bench_raw"})),
                                     chunk_size_bytes=MiB)
        src, out = work / "bench.raw", work / "out.raw"
        by_size: dict[int, Results] = {}
        for mib in args.sizes:
            rounds: list[Results] = []
            paths: list[tuple[str, Callable[[], tuple[float, float]]]] = [
                ("store", partial(bench_repo, store, src, out, mib * MiB)),
                ("service", partial(bench_repo, client, src, out, mib * MiB)),
                ("gridfs", partial(bench_gridfs, bucket, src, out)), ("cp", partial(bench_cp, src, out))]
            for turn in range(args.rounds):  # the paths take turns, each round led by the next one, so
                make_file(src, mib * MiB)    # a slow spell of the host, or going first, hits them alike
                led = paths[turn % len(paths):] + paths[:turn % len(paths)]
                rounds.append({name: path() for name, path in led})
            by_size[mib] = {path: (statistics.median(r[path][0] for r in rounds),
                                   statistics.median(r[path][1] for r in rounds)) for path in rounds[0]}
            print_table(mib, by_size[mib])
        sections = [section(by_size, args.rounds)]
        if args.variants > 0:
            from dedup import dedup_section

            sections.append(dedup_section(work, env, url, service_env, args.variants))
        if args.catalog > 0:
            sections.append(catalog_section(env, work, args.catalog))
        write_json(args.json, sections)
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        embedded.stop(work / "data", timeout=5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
