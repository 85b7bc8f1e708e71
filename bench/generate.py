"""How fast is `fg-image generate` against plain mmdebstrap? Its ratios and their goals (run as root; needs the mirror).

    .venv/bin/python bench/generate.py [--pairs 5] [--json FILE] [--keep]

measure                        Rain                                   peer                                goal
cold build                     empty data dir, median of --pairs      plain mmdebstrap, same packages     <= 1.00
                               pairs, the order swapped each pair
                               (each Rain run gets a fresh empty
                               RAIN_DATA_DIR)
identical recipe rebuilt       the last cold build's data dir         that cold build                     <= 0.10
new recipe, warm cache         a package set not built before, in     plain mmdebstrap, same packages     <= 0.75
                               that warm data dir
batch of four                  `fg-image batch --jobs 2` of four      the sum of four plain mmdebstrap    <= 0.35
                               bookworm minbase recipes (different    runs of the same recipes
                               packages), empty data dir
cost of reproducibility        cold build in all four formats         the same cold build with            <= 1.05
                               (tar.zst, squashfs, raw, qcow2), as    RAIN_REPRODUCIBLE=false (the
                               every build is: times clamped to the   build's own times, random disk
                               source date epoch, disk identifiers    identifiers), median of
                               from the recipe hash                   --repro-pairs pairs, order swapped

`--only reproducibility` runs only the last section (about 3 minutes a pair).

It also times batches of 1, 2 and 4 of those recipes, each from an empty data dir, against the sum
of the plain runs (the series bench/report.py plots), and prints where the batch's time goes: each
step summed over its four manifests, the CPU it used and the floor that CPU sets on this many cores.

The mirror is the host's own (read from its apt configuration at run time). Builds are --no-upload
with one format (tar.zst, what mmdebstrap writes too), so the numbers compare building, not the
repository. Every timed run records the CPU other processes used meanwhile; a ratio measured while
the machine was busy says little, and the notes say which runs were. Timings print; nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import Row, Run, Section, Series, add_json_option, bench_env, format_rows, write_json

HERE = Path(__file__).resolve().parent.parent
FG = Path(sys.executable).parent / "fg-image"
PACKAGES = ["ca-certificates", "hello", "less", "file"]
NEW = "tree"
"""The package that makes the warm-cache recipe's package set new."""
BATCH_EXTRAS = ["bc", "jq", "lsof", "psmisc"]
"""One extra package per batch recipe: four package sets on the same minbase."""
BATCH_SIZES = (1, 2, 4)
RECIPE = """\
name: bench-{tag}
os: {{family: debian, release: bookworm, arch: amd64}}
variant: minbase
packages: [{packages}]
formats: [{formats}]
"""
ALL_FORMATS = "tar.zst, squashfs, raw, qcow2"


def step_seconds(results: Path) -> dict[str, float]:
    """Each step's seconds summed over the manifests under results/."""
    total: dict[str, float] = {}
    for m in sorted(results.glob("*/manifest.json")):
        for t in json.loads(m.read_text())["timings"]:
            total[t["step"]] = total.get(t["step"], 0.0) + t["seconds"]
    return total


def bases_made(results: Path) -> int:
    """How many of the builds under results/ bootstrapped their base system rather than sharing one."""
    return sum(not json.loads(m.read_text()).get("base", {}).get("base_cached")
               for m in results.glob("*/manifest.json"))


def cold_pairs(pairs: int, plain: Callable[[], Run], rain: Callable[[], Run]) -> list[tuple[Run, Run]]:
    """(plain, rain) pairs, each pair run back to back and the order swapped from pair to pair (plain
    first, then Rain first, ...): this machine's speed drifts by a third within minutes (other guests
    on its host), and a fixed order would hand every drift in one direction to the same side."""
    out = []
    for i in range(pairs):
        plain_first = i % 2 == 0
        if plain_first:
            p, r = plain(), rain()
        else:
            r, p = rain(), plain()
        first = "plain" if plain_first else "rain"
        print(f"  pair {i + 1} ({first} first): plain {p.wall:.1f}s, rain cold {r.wall:.1f}s ({r.wall / p.wall:.2f})",
              flush=True)
        out.append((p, r))
    return out


def reproducibility(pairs: int, run: Callable[[bool], Run]) -> Section:
    """Cold builds with the deterministic steps (the default) against the same builds without them
    (RAIN_REPRODUCIBLE=false), each pair back to back, the order swapped each pair."""
    measured: list[tuple[Run, Run]] = []
    for i in range(pairs):
        if i % 2 == 0:
            off, on = run(False), run(True)
        else:
            on, off = run(True), run(False)
        print(f"  pair {i + 1}: reproducible {on.wall:.1f}s, not {off.wall:.1f}s ({on.wall / off.wall:.2f})",
              flush=True)
        measured.append((on, off))
    section = Section("generate: the cost of reproducible builds")
    section.rows = [Row(f"cold build, four formats, reproducible (median of {pairs} pairs)",
                        statistics.median(on.wall for on, _ in measured),
                        "the same build with RAIN_REPRODUCIBLE=false",
                        statistics.median(off.wall for _, off in measured), goal=1.05,
                        ratio=statistics.median(on.wall / off.wall for on, off in measured))]
    section.notes = ["reproducibility pairs: ratios " + ", ".join(f"{on.wall / off.wall:.2f}" for on, off in measured)
                     + "; what the deterministic steps add: reading the packages' newest date, clamping the "
                       "tar's and squashfs's times, one debugfs pass setting every disk inode's times, "
                       "identifiers from the recipe hash (free)"]
    disturbed = sum(r.disturbed for pair in measured for r in pair)
    if disturbed:
        section.notes.append(f"the machine was busy during {disturbed} of these runs (those times are not reliable)")
    return section


def batch_notes(steps: dict[str, float], batch: Run, plain_sum: float, made: int) -> list[str]:
    """Where the batch's time goes, and the floor its CPU sets for the ratio on this machine."""
    cores = os.cpu_count() or 1
    notes = [f"batch of four: {made} of the four builds bootstrapped a base system, the others shared it",
             "batch of four, where the time goes (step seconds summed over the four builds): "
             + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in steps.items()),
             f"batch of four: {batch.wall:.1f}s wall, {batch.cpu:.1f}s CPU ({batch.cpu / batch.wall:.2f} cores busy); "
             f"other processes used {batch.others:.1f}s CPU meanwhile"]
    floor = batch.cpu / cores
    notes.append(f"CPU floor for the batch on {cores} cores: {floor:.1f}s = ratio {floor / plain_sum:.2f} "
                 "(its CPU spread over every core; no scheduling goes below it)")
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--pairs", type=int, default=5, metavar="N",
                    help="cold builds: N (plain, Rain) pairs, the order swapped each pair; the ratio is their "
                         "median (default 5)")
    ap.add_argument("--repro-pairs", type=int, default=3, metavar="N",
                    help="cost of reproducibility: N (reproducible, not) pairs of cold builds (default 3)")
    ap.add_argument("--only", choices=("all", "reproducibility"), default="all",
                    help="run every measure (default), or only the cost of reproducibility")
    add_json_option(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: builds use chroot and mounts")
    sys.path.insert(0, str(HERE))
    from rain.generate.mirror import host_apt_mirror
    from rain.generate.recipe import OsFamily

    mirror = host_apt_mirror(OsFamily.DEBIAN)
    if not mirror:
        sys.exit("no Debian mirror in this host's apt configuration")
    scratch = Path(tempfile.mkdtemp(prefix="rain-bench-gen-"))
    env = bench_env(scratch / "none.toml")
    busy: list[str] = []

    def timed(what: str, argv: list[str], data: Path | None = None) -> Run:
        run = Run(argv, {**env, "RAIN_DATA_DIR": str(data)} if data else env)
        if run.disturbed:
            busy.append(what)
        return run

    def recipe(tag: str, packages: list[str], formats: str = "tar.zst") -> Path:
        p = scratch / f"{tag}.yaml"
        p.write_text(RECIPE.format(tag=tag, packages=", ".join(packages), formats=formats))
        return p

    def plain(what: str, packages: list[str]) -> Run:
        return timed(what, ["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(packages),
                            "bookworm", str(scratch / "plain.tar.zst"), mirror])

    def fresh(name: str) -> Path:
        shutil.rmtree(scratch / name, ignore_errors=True)
        return scratch / name

    def repro(on: bool) -> Run:
        data = fresh("repro")
        return Run([str(FG), "generate", repro_recipe, "--no-upload", "--output", str(scratch / "repro-out")],
                   {**env, "RAIN_DATA_DIR": str(data), "RAIN_REPRODUCIBLE": "true" if on else "false"})

    repro_recipe = str(recipe("repro", PACKAGES, ALL_FORMATS))
    try:
        print("warming the mirror path (not timed) ...", flush=True)
        plain("warm-up", PACKAGES)
        busy.clear()  # only timed runs matter
        if args.only == "reproducibility":
            section = reproducibility(max(1, args.repro_pairs), repro)
            print("\n" + "\n".join(format_rows(section.rows)) + "\n" + "\n".join(f"  {n}" for n in section.notes))
            write_json(args.json, [section])
            return
        cold_recipe = str(recipe("cold", PACKAGES))
        pairs = cold_pairs(max(1, args.pairs), lambda: plain("plain cold", PACKAGES),
                           lambda: timed("rain cold", [str(FG), "generate", cold_recipe, "--no-upload"],
                                           fresh("cold")))
        warm = scratch / "cold"  # the last pair's data dir, warm from its cold build
        again = timed("identical rebuild", [str(FG), "generate", cold_recipe, "--no-upload"], warm)
        new_plain = plain("plain new recipe", [*PACKAGES, NEW])
        new = timed("new recipe", [str(FG), "generate", str(recipe("new", [*PACKAGES, NEW])), "--no-upload"], warm)
        print(f"  identical {again.wall:.1f}s; new recipe {new.wall:.1f}s, plain {new_plain.wall:.1f}s", flush=True)

        sets = [[*PACKAGES, extra] for extra in BATCH_EXTRAS]
        plains = [plain(f"plain batch recipe {i}", s).wall for i, s in enumerate(sets)]
        print("  plain, each batch recipe: " + ", ".join(f"{s:.1f}s" for s in plains), flush=True)
        batches: dict[int, Run] = {}
        for n in BATCH_SIZES:
            batch_file = scratch / f"batch-{n}.yaml"
            batch_file.write_text("recipes:\n" + "".join(f"  - {recipe(f'batch{i}', sets[i]).name}\n"
                                                         for i in range(n)))
            batches[n] = timed(f"batch of {n}", [str(FG), "batch", str(batch_file), "--jobs", "2", "--no-upload"],
                               fresh(f"batch-{n}"))
            print(f"  batch of {n}: {batches[n].wall:.1f}s, plain sum {sum(plains[:n]):.1f}s", flush=True)

        results = scratch / "batch-4" / "cache" / "results"
        section = Section("generate: fg-image vs plain mmdebstrap")
        section.rows = [
            Row(f"cold build, empty data dir (median of {len(pairs)} pairs)",
                statistics.median(r.wall for _, r in pairs), "plain mmdebstrap, same packages",
                statistics.median(p.wall for p, _ in pairs), goal=1.00,
                ratio=statistics.median(r.wall / p.wall for p, r in pairs)),
            Row("identical recipe rebuilt", again.wall, "that recipe's cold build", pairs[-1][1].wall, goal=0.10),
            Row("new recipe, warm package cache", new.wall, "plain mmdebstrap, same packages", new_plain.wall,
                goal=0.75),
            Row("batch of four, --jobs 2, empty data dir", batches[4].wall, "sum of four plain mmdebstrap runs",
                sum(plains), goal=0.35),
        ]
        section.series = [Series("batch wall time vs recipes (peer: plain mmdebstrap runs, summed)",
                                 "recipes in the batch", "wall seconds",
                                 [(n, batches[n].wall) for n in BATCH_SIZES],
                                 [(n, sum(plains[:n])) for n in BATCH_SIZES])]
        section.notes = [f"cold pairs: {len(pairs)}, the order swapped each pair; ratios "
                         + ", ".join(f"{r.wall / p.wall:.2f}" for p, r in pairs)
                         + "; CPU the host took from this machine (steal) per pair, plain/Rain: "
                         + ", ".join(f"{p.steal:.1f}/{r.steal:.1f}s" for p, r in pairs),
                         *batch_notes(step_seconds(results), batches[4], sum(plains), bases_made(results)),
                         f"mirror: this host's apt configuration; {os.cpu_count()} cores"]
        if busy:
            section.notes.append("the machine was busy during: " + ", ".join(busy) + " (those times are not reliable)")
        cost = reproducibility(max(1, args.repro_pairs), repro)
        for part in (section, cost):
            print("\n" + "\n".join(format_rows(part.rows)))
            print("\n" + "\n".join(f"  {n}" for n in part.notes))
        print(f"\nscratch {scratch}")
        write_json(args.json, [section, cost])
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
