"""`fg-image launch` time to SSH for N machines on the qemu site, against QEMU alone booting the same disk.

    .venv/bin/python bench/launch.py [--boot CLOUD.qcow2] [--counts 1,2,4] [--json FILE]

CLOUD.qcow2 is a bootable cloud disk with cloud-init; by default the tests' cached build of
recipes/debian-bookworm-cloud.yaml (built on first use).
The bench stores it in a fresh embedded repository and puts it in the launch cache (the first
launch of an image fetches it once; that is the repository's bench, not this one). Then, for each N:

    rain   `fg-image launch ID --count N --detach`: from the command's start until it returns, which
           is when every machine answers SSH with its pinned host key (seeds, overlays, N QEMUs under TCG)
    peer   QEMU alone, as bench/register.py runs it: a NoCloud seed by xorriso, qemu -snapshot on the
           disk, `ssh` retried until it logs in (one machine)

The launch's machines are stopped (not timed) before the next N. The issue's goal is a ratio of at most
1.2 for N = 1; for more machines the figure shows how the time grows when N emulated machines share
this host's cores.
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

from common import Row, Section, Series, add_json_option, bench_env, numbers, write_json
from register import plain_boot

ROOT = Path(__file__).resolve().parent.parent
FG = ROOT / ".venv" / "bin" / "fg-image"


def fg(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(FG), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"fg-image {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done


def cloud_disk() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.built_images import build_cloud_image

    return build_cloud_image() / "debian-bookworm-cloud.qcow2"


def main() -> None:
    parser = argparse.ArgumentParser(description="launch time to SSH against QEMU alone")
    parser.add_argument("--boot", type=Path, help="a bootable cloud qcow2 with cloud-init (default: the tests' "
                        "recipes/debian-bookworm-cloud.yaml disk, built on first use)")
    parser.add_argument("--counts", type=numbers, default=[1, 2, 4], help="machines per launch (default 1,2,4)")
    add_json_option(parser)
    args = parser.parse_args()
    disk = args.boot.resolve() if args.boot else cloud_disk()
    with tempfile.TemporaryDirectory(prefix="rain-bench-launch-") as tmp:
        work = Path(tmp)
        env = {**bench_env(work / "absent.toml"), "RAIN_DATA_DIR": str(work / "data"), "TMPDIR": str(work),
               "RAIN_LAUNCH_LIFETIME": "3600"}  # a backstop: nothing this bench starts outlives it by long
        image = fg(env, "upload", str(disk), "--os", "debian", "--release", "bookworm", "--arch", "amd64",
                   timeout=600).stdout.strip().splitlines()[-1]
        cache = work / "data" / "launch" / "images"
        cache.mkdir(parents=True)
        shutil.copyfile(disk, cache / f"{image}.qcow2")
        try:
            plain_s = plain_boot(disk, work)
            print(f"QEMU alone, one machine to SSH: {plain_s:.1f}s", flush=True)
            points = []
            for count in args.counts:
                start = time.monotonic()
                fg(env, "launch", image, "--count", str(count), "--detach",
                   "--memory", "1024", timeout=1800)
                seconds = time.monotonic() - start
                fg(env, "instances", "stop", "--all")
                points.append((float(count), seconds))
                print(f"launch --count {count}: every machine answers SSH after {seconds:.1f}s "
                      f"({seconds / plain_s:.2f}x QEMU alone)", flush=True)
        finally:
            subprocess.run([str(FG), "instances", "stop", "--all"], env=env, capture_output=True)
            subprocess.run([str(FG), "repo", "stop"], env=env, capture_output=True)
    rows = [Row(f"launch --count {int(n)} to SSH", s, "QEMU alone, 1 machine", plain_s,
                goal=1.2 if n == 1 else None) for n, s in points]
    section = Section("launch", rows, [Series("launch seconds to SSH vs machines (peer: QEMU alone, 1 machine)",
                                              "machines", "seconds", points, [(n, plain_s) for n, _ in points])],
                      [f"TCG on {os.cpu_count()} cores; each machine gets min(4, max(1, cores / N)) vCPUs and 1 GiB; "
                       "QEMU alone gets 2 vCPUs. The image is in the launch cache before the first launch."])
    write_json(args.json, [section])


if __name__ == "__main__":
    main()
