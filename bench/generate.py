"""How fast is `fg-image generate`? One run prints four ratios (run as root; needs the network mirror).

    .venv/bin/python bench/generate.py [--keep]

1. cold build       Rain, empty caches  vs  plain mmdebstrap with the same packages   target <= 1.10
2. identical again  Rain, same recipe   vs  the cold build                            target <= 0.10
3. one package more Rain                vs  the cold build                            target <= 0.40
4. batch of four    --jobs 2            vs  --jobs 1 (same warm base, no results)     target <= 0.50

The mirror is the host's own (read from its apt configuration at run time).
Builds are --no-upload with one format (tar.zst, what mmdebstrap writes too),
so the numbers compare building, not the repository. Timings print; nothing asserts.
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
PACKAGES = ["ca-certificates", "hello", "less", "file"]
RECIPE = """\
name: bench-{tag}
os: {{family: debian, release: bookworm, arch: amd64}}
variant: minbase
packages: [{packages}]
formats: [tar.zst]
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
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
        runs = {}
        for jobs in (1, 2):
            d = scratch / f"data-j{jobs}"
            subprocess.run(["cp", "-a", "--link", str(data), str(d)], check=True)
            shutil.rmtree(d / "cache" / "results")
            runs[jobs] = rain(d, "batch", str(batch), "--jobs", str(jobs))

        rows = [
            ("cold build vs plain mmdebstrap", cold, plain, 1.10),
            ("identical recipe rebuild vs cold", again, cold, 0.10),
            ("one package changed vs cold", one_more, cold, 0.40),
            ("4-recipe batch --jobs 2 vs sequential", runs[2], runs[1], 0.50),
        ]
        print(f"\n{'measure':40} {'rain':>8} {'versus':>8} {'ratio':>6} {'target':>7}")
        for name, a, b, target in rows:
            ok = "ok" if a / b <= target else "MISSED"
            print(f"{name:40} {a:7.1f}s {b:7.1f}s {a / b:6.2f} {'<=' + format(target, '.2f'):>7} {ok}")
        print(f"\nmirror: host apt configuration; {os.cpu_count()} cores; scratch {scratch}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
