"""How fast is `fg-image generate`? One run prints four ratios (run as root; needs the network mirror).

    .venv/bin/python bench/generate.py [--keep]

1. cold build       Rain, empty caches  vs  plain mmdebstrap with the same packages   target <= 1.10
2. identical again  Rain, same recipe   vs  the cold build                            target <= 0.10
3. one package more Rain                vs  the cold build                            target <= 0.40
4. batch of four    --jobs 2            vs  --jobs 1 (same warm base, no results)     target <= 0.50

The mirror is the host's own (read from its apt configuration at run time).
Builds are --no-upload with one format (tar.zst, what mmdebstrap writes too),
so the numbers compare building, not the repository. Timings print; nothing asserts.

For the batch it also prints where the time goes (each step summed over the
four manifests), the CPU the builds used, and the floor that CPU sets for
--jobs 2 on this many cores: a sequential run that already keeps more than
one core busy (zstd threads, dpkg-deb beside dpkg) cannot be halved. Every
timed run records the CPU other processes used meanwhile; a ratio measured
while the machine was busy says little (`--batch-runs N` keeps the fastest of N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
FG = Path(sys.executable).parent / "fg-image"
PACKAGES = ["ca-certificates", "hello", "less", "file"]
RECIPE = """\
name: bench-{tag}
os: {{family: debian, release: bookworm, arch: amd64}}
variant: minbase
packages: [{packages}]
formats: [tar.zst]
"""


def _busy_seconds() -> float:
    """CPU time all processes on this machine used so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Run:
    """One timed command: wall seconds, the CPU it used, the CPU everything else used meanwhile."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        busy0, own0, t0 = _busy_seconds(), _children_cpu(), time.monotonic()
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
        self.wall = time.monotonic() - t0
        self.cpu = _children_cpu() - own0
        self.others = max(0.0, _busy_seconds() - busy0 - self.cpu)

    @property
    def disturbed(self) -> bool:
        return self.others > 0.1 * self.wall  # others kept a tenth of a core busy


def timed(argv: list[str], env: dict[str, str]) -> float:
    return Run(argv, env).wall


def step_seconds(results: Path) -> dict[str, float]:
    """Each step's seconds summed over the manifests under results/."""
    total: dict[str, float] = {}
    for m in sorted(results.glob("*/manifest.json")):
        for t in json.loads(m.read_text())["timings"]:
            total[t["step"]] = total.get(t["step"], 0.0) + t["seconds"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--batch-runs", type=int, default=1, metavar="N",
                    help="time each batch N times (alternating) and keep the fastest (default 1)")
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_CONFIG": str(scratch / "none.toml"), "NO_COLOR": "1"})
    try:
        def recipe(tag: str, packages: list[str]) -> Path:
            p = scratch / f"{tag}.yaml"
            p.write_text(RECIPE.format(tag=tag, packages=", ".join(packages)))
            return p

        def rain(data: Path, *argv: str) -> float:
            return timed([str(FG), *argv, "--no-upload"], {**env, "RAIN_DATA_DIR": str(data)})

        plain_argv = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                      "bookworm", str(scratch / "plain.tar.zst"), mirror]
        print("warming the mirror path (not timed) ...", flush=True)
        timed(plain_argv, env)
        plain = timed(plain_argv, env)
        data = scratch / "data"
        cold = rain(data, "generate", str(recipe("a", PACKAGES)))
        again = rain(data, "generate", str(recipe("a", PACKAGES)))
        one_more = rain(data, "generate", str(recipe("b", [*PACKAGES, "tree"])))
        print(f"plain {plain:.1f}s, cold {cold:.1f}s, again {again:.1f}s, one more {one_more:.1f}s", flush=True)

        batch = scratch / "batch.yaml"
        batch.write_text("recipes:\n" + "".join(
            f"  - {recipe(f'batch{i}', [*PACKAGES, extra]).name}\n"
            for i, extra in enumerate(["tree", "bc", "jq", "lsof"])))
        runs: dict[int, Run] = {}
        steps: dict[int, dict[str, float]] = {}
        for _ in range(max(1, args.batch_runs)):
            for jobs in (1, 2):
                d = scratch / f"data-j{jobs}"
                shutil.rmtree(d, ignore_errors=True)
                subprocess.run(["cp", "-a", "--link", str(data), str(d)], check=True)
                shutil.rmtree(d / "cache" / "results")
                run = Run([str(FG), "batch", str(batch), "--jobs", str(jobs), "--no-upload"],
                          {**env, "RAIN_DATA_DIR": str(d)})
                if jobs not in runs or run.wall < runs[jobs].wall:
                    runs[jobs], steps[jobs] = run, step_seconds(d / "cache" / "results")

        rows = [
            ("cold build vs plain mmdebstrap", cold, plain, 1.10),
            ("identical recipe rebuild vs cold", again, cold, 0.10),
            ("one package changed vs cold", one_more, cold, 0.40),
            ("4-recipe batch --jobs 2 vs sequential", runs[2].wall, runs[1].wall, 0.50),
        ]
        print(f"\n{'measure':40} {'rain':>8} {'versus':>8} {'ratio':>6} {'target':>7}")
        for name, a, b, target in rows:
            ok = "ok" if a / b <= target else "MISSED"
            print(f"{name:40} {a:7.1f}s {b:7.1f}s {a / b:6.2f} {'<=' + format(target, '.2f'):>7} {ok}")
        cores = os.cpu_count() or 1
        print("\nbatch: where the time goes (step seconds summed over the four builds)")
        names = list(dict.fromkeys([*steps[1], *steps[2]]))
        print(f"  {'step':16} {'--jobs 1':>9} {'--jobs 2':>9}")
        for name in names:
            print(f"  {name:16} {steps[1].get(name, 0):8.1f}s {steps[2].get(name, 0):8.1f}s")
        for jobs in (1, 2):
            r = runs[jobs]
            note = "  <- the machine was busy: this time is not reliable" if r.disturbed else ""
            print(f"  --jobs {jobs}: {r.wall:5.1f}s wall, {r.cpu:5.1f}s CPU ({r.cpu / r.wall:.2f} cores busy); "
                  f"other processes used {r.others:.1f}s CPU meanwhile{note}")
        floor = runs[1].cpu / cores
        if runs[1].disturbed:
            print(f"  CPU floor for --jobs 2 on {cores} cores: {floor:.1f}s (the builds' CPU spread over every core); "
                  "no floor ratio: --jobs 1 was slowed by other processes")
        else:
            print(f"  CPU floor for --jobs 2 on {cores} cores: {floor:.1f}s = ratio {floor / runs[1].wall:.2f} "
                  "(the builds' CPU spread over every core; no scheduling goes below it)")
        print(f"\nmirror: host apt configuration; {cores} cores; scratch {scratch}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
