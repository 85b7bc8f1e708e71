"""How much does a builder VM cost? Prints the qemu builder's build times against the local builder's for
the same recipes, as ratios (run as root; needs the host's package mirror).

    .venv/bin/python bench/builders.py [--keep] [--pairs 3] [--recipe recipes/debian-bookworm-minimal.yaml]

1. builder VM up     `fg-image builder check qemu`: boot to a root SSH login (and back down)
2. a one-package change, warm: the recipe plus one package, built locally and then on the qemu
                     builder, with the base system and the downloaded .debs already in the cache (one
                     earlier local build of the recipe, not timed). The VM gets the cached base on its
                     transfer disk and installs the packages itself; --pairs pairs, each with another
                     package, run alternately; ratio = median of qemu / local.
3. cold              `--no-cache` (the base system is bootstrapped again) locally and on the qemu builder,
                     with the qemu build's time split: boot, base system (made here), sending it, the
                     packages in the VM, bringing the tree back, packing.

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
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent.parent
FG = Path(sys.executable).parent / "fg-image"
EXTRA = ("file", "less", "bc", "jq", "tree")
"""The one package each change adds (small, in every Debian release, not in the minimal recipe)."""


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    return time.monotonic() - t0, r.stdout


def build(recipe: str, builder: str, env: dict[str, str], out: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    seconds, _ = timed([str(FG), "generate", recipe, "--no-upload", "--format", "tar.zst", "--builder", builder,
                        "--output", str(out), *extra], env)
    return seconds, json.loads((out / "manifest.json").read_text())


def steps(manifest: dict[str, Any]) -> dict[str, float]:
    return {t["step"]: float(t["seconds"]) for t in manifest["timings"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--pairs", type=int, default=3, help=f"one-package changes to time (at most {len(EXTRA)})")
    ap.add_argument("--recipe", default=str(HERE / "recipes" / "debian-bookworm-minimal.yaml"))
    ap.add_argument("--data", help="Rain data dir to use (keeps the builder image between runs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: builds use chroot, mounts and QEMU")
    scratch = Path(tempfile.mkdtemp(prefix="rain-bench-builders-"))
    data = Path(args.data) if args.data else scratch / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_CONFIG": str(scratch / "none.toml"), "RAIN_DATA_DIR": str(data), "NO_COLOR": "1"})
    base_packages = list(yaml.safe_load(Path(args.recipe).read_text()).get("packages") or [])
    try:
        print("making and preparing the qemu builder image (not timed) ...", flush=True)
        made, _ = timed([str(FG), "builder", "image"], env)
        print(f"  {made:.0f}s", flush=True)
        up, line = timed([str(FG), "builder", "check", "qemu"], env)
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
        split = steps(cm)
        print(f"\n{line.strip()}")
        print(f"\n{'measure':52} {'seconds':>8} {'ratio':>6}")
        print(f"{'builder VM boot to SSH login and back down':52} {up:7.1f}s")
        for pkg, local, qemu in rows:
            print(f"{'one-package change (+' + pkg + '), local':52} {local:7.1f}s")
            print(f"{'one-package change (+' + pkg + '), qemu, cached base sent':52} {qemu:7.1f}s {qemu / local:6.2f}")
        median = statistics.median(q / lo for _, lo, q in rows)
        print(f"{'one-package change: median qemu / local (goal <= 3)':52} {'':>8} {median:6.2f}")
        print(f"{'cold (--no-cache), local':52} {cold_local:7.1f}s")
        print(f"{'cold (--no-cache), qemu':52} {cold_qemu:7.1f}s {cold_qemu / cold_local:6.2f}")
        send = split.get("send the base system to the builder", 0.0)
        parts = [("boot the VM", split.get("start qemu builder", 0.0)),
                 ("base system, bootstrapped here", split.get("base system", 0.0) - send),
                 ("send it to the VM (transfer disk)", send),
                 ("packages, installed in the VM", split.get("packages", 0.0)),
                 ("bring the tree back (transfer disk)", split.get("fetch the image from the builder", 0.0)),
                 ("pack here", sum(v for k, v in split.items() if k.startswith("pack ")))]
        for what, seconds in parts:
            print(f"{'  cold qemu: ' + what:52} {seconds:7.1f}s")
        print(f"\nrecipe {args.recipe}; {os.cpu_count()} cores; scratch {scratch}")
    finally:
        subprocess.run([str(FG), "repo", "stop"], env=env, capture_output=True)  # the embedded server
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
