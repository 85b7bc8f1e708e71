"""How much does a builder VM cost? Prints the qemu builder's build times against the local builder's for
the same recipes, as ratios (run as root; needs the host's package mirror).

    .venv/bin/python bench/builders.py [--keep] [--pairs 3] [--vms 1,2] [--json FILE]
                                       [--recipe recipes/debian-bookworm-minimal.yaml]

1. builder VM up     `fg-image builder check qemu`: boot to a root SSH login (and back down)
2. a one-package change, warm: the recipe plus one package, built locally and then on the qemu
                     builder, with the base system and the downloaded .debs already in the cache (one
                     earlier local build of the recipe, not timed). The VM mounts the cached base's
                     image from its base disk and installs the packages itself; --pairs pairs, each with another
                     package, run alternately; ratio = median of qemu / local.
3. cold              `--no-cache` (the base system is bootstrapped again) locally and on the qemu builder,
                     with the qemu build's time split: boot, base system (made here), attaching it (its
                     image made and written to the base disk), the packages in the VM, bringing the
                     upper layer back, packing.
4. N VMs at once     for each N of --vms: the recipe N times (N names, base and .debs cached) as one
                     `fg-image batch --builder qemu --jobs N`, against the same batch on the local
                     builder; how the cost grows with the number of VMs (at most the qemu provider's
                     `limit` run at once, default 2).

The qemu builder image is made and prepared first (not timed). Under TCG (no working KVM) the VM is
emulated, so every command in it is slow; the numbers are printed, nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from common import Row, Run, Section, Series, add_json_option, bench_env, numbers, write_json

HERE = Path(__file__).resolve().parent.parent
FG = Path(sys.executable).parent / "fg-image"
EXTRA = ("file", "less", "bc", "jq", "tree")
"""The one package each change adds (small, in every Debian release, not in the minimal recipe)."""


def build(recipe: str, builder: str, env: dict[str, str], out: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    run = Run([str(FG), "generate", recipe, "--no-upload", "--format", "tar.zst", "--builder", builder,
               "--output", str(out), *extra], env)
    return run.wall, json.loads((out / "manifest.json").read_text())


def steps(manifest: dict[str, Any]) -> dict[str, float]:
    return {t["step"]: float(t["seconds"]) for t in manifest["timings"]}


def cold_split(manifest: dict[str, Any]) -> list[tuple[str, float]]:
    """Where a cold qemu build's time goes, from its manifest's step timings."""
    split = steps(manifest)
    send = split.get("send the base system to the builder", 0.0)
    return [("boot the VM", split.get("start qemu builder", 0.0)),
            ("base system, bootstrapped here", split.get("base system", 0.0) - send),
            ("attach it to the VM (base disk; its image made the first time)", send),
            ("packages, installed in the VM", split.get("packages", 0.0)),
            ("bring the changes back (upper layer, transfer disk)", split.get("fetch the image from the builder", 0.0)),
            ("pack here", sum(v for k, v in split.items() if k.startswith("pack ")))]


def batch_file(recipe: str, n: int, path: Path) -> Path:
    """The recipe n times under n names, so each is a build of its own (the result cache keys on the name)."""
    path.write_text(yaml.safe_dump({"recipes": [{"path": str(Path(recipe).resolve()), "set": {"name": f"vms{n}-{i}"}}
                                                for i in range(n)]}))
    return path


def vm_sweep(recipe: str, counts: list[int], env: dict[str, str], scratch: Path) -> list[tuple[int, float, float]]:
    """(N, qemu seconds, local seconds): the recipe built N times at once, in N VMs and in N local chroots."""
    out = []
    for n in counts:
        argv = [str(FG), "batch", str(batch_file(recipe, n, scratch / f"vms-{n}.yaml")), "--jobs", str(n),
                "--no-upload", "--format", "tar.zst", "--builder"]
        local, qemu = Run([*argv, "local"], env).wall, Run([*argv, "qemu"], env).wall
        print(f"  {n} at once: local {local:.1f}s, qemu {qemu:.1f}s", flush=True)
        out.append((n, qemu, local))
    return out


def section(up: float, changes: list[tuple[str, float, float]], cold: tuple[float, float],
            split: list[tuple[str, float]], sweep: list[tuple[int, float, float]]) -> Section:
    """The figures as data for bench/report.py; the peer is always the local builder (a chroot on this host)."""
    rows = [Row(f"one-package change (+{pkg}), cached base sent", qemu, "local builder", local)
            for pkg, local, qemu in changes]
    rows.append(Row("one-package change, median of the pairs", statistics.median(q for _, _, q in changes),
                    "local builder", statistics.median(lo for _, lo, _ in changes), goal=3.0,
                    ratio=statistics.median(q / lo for _, lo, q in changes)))
    rows.append(Row("cold (--no-cache)", cold[1], "local builder", cold[0]))
    rows += [Row(f"{n} at once (batch --jobs {n})", qemu, "local builder, same batch", local)
             for n, qemu, local in sweep]
    series = [Series("seconds vs VMs at once (peer: the same batch on the local builder)", "builds at once (VMs)",
                     "wall seconds", [(n, q) for n, q, _ in sweep], [(n, lo) for n, _, lo in sweep])]
    notes = [f"builder VM boot to SSH login and back down: {up:.1f}s",
             "cold qemu build, where the time goes: " + ", ".join(f"{w} {s:.1f}s" for w, s in split),
             f"{os.cpu_count()} cores; the qemu provider runs at most its `limit` (default 2) VMs at once"]
    return Section("builders: qemu VM vs local chroot", rows, series, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--pairs", type=int, default=3, help=f"one-package changes to time (at most {len(EXTRA)})")
    ap.add_argument("--vms", type=numbers, default=[1, 2], help="builds at once to time, comma-separated (default 1,2)")
    ap.add_argument("--recipe", default=str(HERE / "recipes" / "debian-bookworm-minimal.yaml"))
    ap.add_argument("--data", help="Rain data dir to use (keeps the builder image between runs)")
    add_json_option(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: builds use chroot, mounts and QEMU")
    scratch = Path(tempfile.mkdtemp(prefix="rain-bench-builders-"))
    data = Path(args.data) if args.data else scratch / "data"
    env = {**bench_env(scratch / "none.toml"), "RAIN_DATA_DIR": str(data)}
    base_packages = list(yaml.safe_load(Path(args.recipe).read_text()).get("packages") or [])
    shutil.rmtree(data / "cache" / "results", ignore_errors=True)  # a --data dir's earlier results are no build
    try:
        print("making and preparing the qemu builder image (not timed) ...", flush=True)
        made = Run([str(FG), "builder", "image"], env)
        print(f"  {made.wall:.0f}s", flush=True)
        check = Run([str(FG), "builder", "check", "qemu"], env)
        build(args.recipe, "local", env, scratch / "warm")  # the base system and the .debs, for both
        rows = []
        for i, pkg in enumerate(EXTRA[:args.pairs]):
            change = ["--set", f"packages={json.dumps([*base_packages, pkg])}", "--set", f"name=change-{pkg}"]
            local, _ = build(args.recipe, "local", env, scratch / f"local-{i}", *change)
            qemu, m = build(args.recipe, "qemu", env, scratch / f"qemu-{i}", *change)
            assert m["base"].get("base_cached"), "the qemu build should have had the cached base"
            rows.append((pkg, local, qemu))
            print(f"  + {pkg}: local {local:.1f}s, qemu {qemu:.1f}s", flush=True)
        cold_local, _ = build(args.recipe, "local", env, scratch / "cold-local", "--no-cache")
        cold_qemu, cm = build(args.recipe, "qemu", env, scratch / "cold-qemu", "--no-cache")
        sweep = vm_sweep(args.recipe, args.vms, env, scratch)
        up = check.wall
        print(f"\n{check.stdout.strip()}")
        print(f"\n{'measure':52} {'seconds':>8} {'ratio':>6}")
        print(f"{'builder VM boot to SSH login and back down':52} {up:7.1f}s")
        for pkg, local, qemu in rows:
            print(f"{'one-package change (+' + pkg + '), local':52} {local:7.1f}s")
            print(f"{'one-package change (+' + pkg + '), qemu, cached base sent':52} {qemu:7.1f}s {qemu / local:6.2f}")
        median = statistics.median(q / lo for _, lo, q in rows)
        print(f"{'one-package change: median qemu / local (goal <= 3)':52} {'':>8} {median:6.2f}")
        print(f"{'cold (--no-cache), local':52} {cold_local:7.1f}s")
        print(f"{'cold (--no-cache), qemu':52} {cold_qemu:7.1f}s {cold_qemu / cold_local:6.2f}")
        for what, seconds in cold_split(cm):
            print(f"{'  cold qemu: ' + what:52} {seconds:7.1f}s")
        for n, qemu, local in sweep:
            print(f"{f'{n} at once (batch --jobs {n}), local':52} {local:7.1f}s")
            print(f"{f'{n} at once (batch --jobs {n}), qemu':52} {qemu:7.1f}s {qemu / local:6.2f}")
        print(f"\nrecipe {args.recipe}; {os.cpu_count()} cores; scratch {scratch}")
        write_json(args.json, [section(up, rows, (cold_local, cold_qemu), cold_split(cm), sweep)])
    finally:
        subprocess.run([str(FG), "repo", "stop"], env=env, capture_output=True)  # the embedded server
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
