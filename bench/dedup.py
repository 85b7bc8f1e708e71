"""Variants stored once and moved as their changed chunks (bench/repository.py --variants N runs it).

N one-package variants of one Debian minbase (the base plus a different small
package each) are built by `fg-image batch --no-upload` in tar.zst, raw and
qcow2, then each format's N files are stored in a database of their own. It
prints, per format, the stored bytes against the logical bytes (the N files
counted whole) and against one image (the largest), and for a variant moved
through the service after its sibling: the bytes a delta upload sent and a
delta download with the sibling as --seed fetched, against the whole file (as a
user: only the sibling's chunks count as present, not every stored chunk).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import Row, Section

from rain.config import load_settings
from rain.repository import client_delta
from rain.repository.chunk_cache import ChunkCache
from rain.repository.client import Client
from rain.repository.connect import open_store
from rain.repository.models import ImageMeta

EXTRAS = ["hello", "tree", "bc", "jq", "lsof", "psmisc", "less", "file", "nano", "time", "zstd", "pv"]
FORMATS = ["tar.zst", "raw", "qcow2"]
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "debian-variant.yaml"


def build(work: Path, env: dict[str, str], n: int) -> dict[str, list[Path]]:
    """The n variants in each format: {format: [file…]}, built in one batch (one base, shared)."""
    extras = EXTRAS[:n]
    (work / "variants.yaml").write_text(f"matrix:\n  - recipe: {RECIPE}\n    axes:\n"
                                        f"      vars.extra: [{', '.join(extras)}]\n")
    out = work / "variants"
    started = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / "fg-image"), "batch", str(work / "variants.yaml"),
                    "--jobs", "2", "--no-upload", "-o", str(out), *(a for f in FORMATS for a in ("--format", f))],
                   check=True, env={**env, "RAIN_DATA_DIR": str(work / "build-data")}, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    print(f"built {n} variants in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return {fmt: [out / f"variant-{e}" / f"variant-{e}.{fmt}" for e in extras] for fmt in FORMATS}


def stored_section(files: dict[str, list[Path]], env: dict[str, str]) -> list[Row]:
    rows = []
    for fmt, paths in files.items():
        store = open_store(load_settings(environ={**env, "RAIN_MONGO_DB": f"bench_dedup_{fmt.replace('.', '_')}"}),
                           "bench")
        for path in paths:
            with open(path, "rb") as f:
                store.put(f, ImageMeta(name=path.stem, format=fmt), path.stat().st_size)
        report = store.storage()
        largest = max(p.stat().st_size for p in paths)
        print(f"{fmt}: {len(paths)} variants, logical {report.logical_bytes >> 20} MiB, stored "
              f"{report.stored_bytes >> 20} MiB ({report.stored_bytes / largest:.2f} x one image)", file=sys.stderr)
        rows.append(Row(f"{fmt}: {len(paths)} variants stored, against one image", report.stored_bytes / 2**20,
                        "the largest variant alone", largest / 2**20, unit="MiB", goal=1.5))
        rows.append(Row(f"{fmt}: {len(paths)} variants stored, against their logical size",
                        report.stored_bytes / 2**20, "the files counted whole (what quotas charge)",
                        report.logical_bytes / 2**20, unit="MiB"))
    return rows


def wire_rows(files: dict[str, list[Path]], url: str, token: str, work: Path) -> list[Row]:
    """A variant up after its sibling (--base) and down with the sibling as --seed, in each format."""
    client = Client(url, token, timeout=600)
    rows = []
    for fmt, paths in files.items():
        sibling, variant = paths[0], paths[1]
        # named by format too: the user's own newest images of the same name count as present, and the
        # raw file of the same build (uploaded just before) would stand in for the qcow2 one
        with open(sibling, "rb") as f:
            base = client.put(f, ImageMeta(name=f"{sibling.stem}-{fmt}", format=fmt), sibling.stat().st_size)
        size = variant.stat().st_size
        with open(variant, "rb") as f:
            image = client.put(f, ImageMeta(name=f"{variant.stem}-{fmt}", format=fmt), size, bases=[base.id])
        sent = next(e.detail["new_bytes"] for e in client.history(image.id) if e.action == "upload")
        got = client_delta.get(client, image.id, work / "down.part", [sibling], ChunkCache(work / "none", 0), None)
        rows.append(Row(f"{fmt}: a variant uploaded with its sibling as --base, bytes sent", sent / 2**20,
                        "the whole file", size / 2**20, unit="MiB", goal=0.15))
        rows.append(Row(f"{fmt}: that variant downloaded with its sibling as --seed, bytes fetched",
                        got.fetched / 2**20, "the whole file", size / 2**20, unit="MiB", goal=0.15))
        (work / "down.part").unlink(missing_ok=True)
    return rows


def dedup_section(work: Path, env: dict[str, str], url: str, service_env: dict[str, str], n: int) -> Section:
    files = build(work, env, n)
    # a user, not the administrator: an administrator's upload counts every stored chunk as present (the
    # raw variants would then stand in for the qcow2 ones); a user's, only its --base image's
    admin = open_store(load_settings(environ=service_env), "bench")
    admin.add_user("variants")
    rows = stored_section(files, env) + wire_rows(files, url, admin.issue_token("variants"), work)
    notes = [f"{n} variants of a Debian bookworm minbase, each with one more small package "
             f"({', '.join(EXTRAS[:n])}), built by one `fg-image batch --jobs 2`; tar.zst as generate writes "
             "it: package order, times clamped, independent zstd frames (rain.image.tarball)",
             "stored: the distinct content-defined chunks (FastCDC, about 1 MiB) of the variants' files in a "
             "database of their own; wire: what the service's delta upload and download moved, counted by the "
             "repository (new_bytes) and the client (fetched)"]
    return Section("repository: variants stored once", rows, [], notes)
