"""How much does a builder VM cost? One run prints the qemu builder's build time against the
local builder's for the same recipe, as a ratio (run as root; needs the host's package mirror).

    .venv/bin/python bench/builders.py [--keep] [--recipe recipes/debian-bookworm-minimal.yaml]

1. builder VM up     `fg-image builder check qemu`: boot to a root SSH login (and back down)
2. local build       `fg-image generate RECIPE --builder local --no-cache --no-upload`
3. qemu build        the same with `--builder qemu`: boot, mmdebstrap + apt inside the VM,
                     stream the tree back, pack here                      ratio = qemu / local

Both builds start cold (--no-cache: no base-system or result cache; the local builder still
reuses downloaded .debs, the VM downloads through QEMU's user-mode network). The qemu builder
image is made and prepared first (not timed). Under TCG (no working KVM) the VM is emulated,
so expect a large ratio; the numbers are printed, nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
FG = Path(sys.executable).parent / "fg-image"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    return time.monotonic() - t0, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--recipe", default=str(HERE / "recipes" / "debian-bookworm-minimal.yaml"))
    ap.add_argument("--data", help="Rain data dir to use (keeps the builder image between runs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: builds use chroot, mounts and QEMU")
    scratch = Path(tempfile.mkdtemp(prefix="rain-bench-builders-"))
    data = Path(args.data) if args.data else scratch / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_CONFIG": str(scratch / "none.toml"), "RAIN_DATA_DIR": str(data), "NO_COLOR": "1"})
    try:
        print("making and preparing the qemu builder image (not timed) ...", flush=True)
        made, _ = timed([str(FG), "builder", "image"], env)
        print(f"  {made:.0f}s", flush=True)
        up, line = timed([str(FG), "builder", "check", "qemu"], env)
        build = [str(FG), "generate", args.recipe, "--no-cache", "--no-upload", "--format", "tar.zst"]
        timed([*build, "--builder", "local"], env)  # warms the .deb cache and the page cache for both
        local, _ = timed([*build, "--builder", "local"], env)
        qemu, _ = timed([*build, "--builder", "qemu"], env)
        print(f"\n{line.strip()}")
        print(f"\n{'measure':44} {'seconds':>8} {'ratio':>6}")
        print(f"{'builder VM boot to SSH login and back down':44} {up:7.1f}s")
        print(f"{'local builder (chroot here)':44} {local:7.1f}s {1.0:6.2f}")
        print(f"{'qemu builder (VM)':44} {qemu:7.1f}s {qemu / local:6.2f}")
        print(f"\nrecipe {args.recipe}; {os.cpu_count()} cores; scratch {scratch}")
    finally:
        subprocess.run([str(FG), "repo", "stop"], env=env, capture_output=True)  # the embedded server
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
