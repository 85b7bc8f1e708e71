"""Run the benches and write their results as one report: bench/report/REPORT.md and a PNG per series.

    sudo .venv/bin/python bench/report.py                      # every bench (about an hour under TCG)
    sudo .venv/bin/python bench/report.py --only repository    # some of them
    sudo .venv/bin/python bench/report.py --skip builders,register
    .venv/bin/python bench/report.py --from bench/report       # render again from the JSON already written
    sudo .venv/bin/python bench/report.py --args "generate=--pairs 5" --args "repository=--sizes 16,64"

Each bench runs as its own process (`python bench/NAME.py --json FILE`), so one that fails or is
killed leaves the others' results: its error goes into the report, and this exits 1. Each bench's
JSON and console log are kept in the output directory (NAME.json, NAME.log; NAME.error for a failure),
which is what `--from` reads. Plots use matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from common import Row, Section, Series, read_json

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BENCHES = ("generate", "repository", "builders", "register", "launch")


@dataclass
class Outcome:
    """One bench's sections, or why there are none."""

    name: str
    sections: list[Section] = field(default_factory=list)
    error: str = ""
    measured: str = ""


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise argparse.ArgumentTypeError(f"no bench {', '.join(unknown)}; the benches are {', '.join(BENCHES)}")
    return names


def chosen(only: list[str] | None, skip: list[str] | None) -> list[str]:
    return [n for n in BENCHES if (only is None or n in only) and n not in (skip or [])]


def bench_args(pairs: list[str]) -> dict[str, list[str]]:
    """`--args NAME=ARGS` as {NAME: argv}: extra options passed to one bench."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, argv = pair.partition("=")
        if not sep or name not in BENCHES:
            sys.exit(f"--args wants NAME=ARGS with NAME one of {', '.join(BENCHES)}, not {pair!r}")
        out.setdefault(name, []).extend(shlex.split(argv))
    return out


def _stamp(path: Path) -> str:
    return datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _recorded(result: Path) -> str:
    """When the results in NAME.json were measured: what run() wrote into them (a file's mtime is lost by a
    git checkout), else the file's mtime."""
    try:
        return str(json.loads(result.read_text())[0]["measured"])
    except (ValueError, LookupError, TypeError):
        return _stamp(result)


def _record_time(result: Path) -> None:
    data = json.loads(result.read_text())
    for section in data:
        section["measured"] = _stamp(result)
    result.write_text(json.dumps(data, indent=1) + "\n")


def load(name: str, directory: Path) -> Outcome:
    """A bench's outcome from the files an earlier run left in directory."""
    result, error = directory / f"{name}.json", directory / f"{name}.error"
    if result.is_file():
        return Outcome(name, read_json(result), measured=_recorded(result))
    if error.is_file():
        return Outcome(name, error=error.read_text(), measured=_stamp(error))
    return Outcome(name, error=f"no {result.name} in {directory}: the bench has not been run there")


def earlier_results(name: str, directory: Path) -> bool:
    return (directory / f"{name}.json").is_file() or (directory / f"{name}.error").is_file()


def run(name: str, out: Path, extra: list[str]) -> Outcome:
    """Run one bench, its output shown as it goes and kept in NAME.log, its results in NAME.json."""
    result, error, partial = out / f"{name}.json", out / f"{name}.error", out / f"{name}.json.partial"
    for stale in (result, error, partial):
        stale.unlink(missing_ok=True)
    argv = [sys.executable, str(BENCH / f"{name}.py"), "--json", str(partial), *extra]
    print(f"== {name}: {shlex.join(argv)}", flush=True)
    tail: deque[str] = deque(maxlen=40)
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},  # lines as they come
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  {name}: {line}", end="", flush=True)
            log.write(line)
            tail.append(line)
        code = proc.wait()
    if code == 0 and partial.is_file():
        partial.replace(result)
        _record_time(result)
        return load(name, out)
    partial.unlink(missing_ok=True)
    error.write_text(f"exit status {code}; the end of its output:\n\n{''.join(tail)}")
    return load(name, out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def title_and_peer(series: Series) -> tuple[str, str]:
    """A name "TITLE (peer: WHAT)" as (TITLE, WHAT): the plot's title and the peer line's legend."""
    named = re.search(r"\s*\(peer: (.+)\)$", series.name)
    return (series.name[:named.start()], named.group(1)) if named else (series.name, "peer")


def plot(series: Series, path: Path) -> None:
    """Rain's points and the peer's on one chart: how each cost grows with size."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written, not shown
    import matplotlib.pyplot as plt

    title, peer = title_and_peer(series)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, points, style in (("Rain", series.points, "o-"), (peer, series.peer_points, "s--")):
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], style, label=label)
    xs = [x for x, _ in series.points]
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)  # sizes that double: evenly spaced
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_ylim(bottom=0)
    ax.set(title=title, xlabel=series.x_label, ylabel=series.y_label)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cell(value: float, unit: str) -> str:
    return f"{value:.1f} {unit}".strip()


def table(rows: list[Row]) -> list[str]:
    lines = ["| measure | Rain | peer | peer figure | ratio | goal | met? |",
             "| --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        goal = "—" if r.goal is None else f"≤ {r.goal:.2f}"
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        lines.append(f"| {r.measure} | {_cell(r.figure, r.unit)} | {r.peer} | {_cell(r.peer_figure, r.unit)} "
                     f"| {ratio} | {goal} | {met} |")
    return lines


def accel() -> str:
    """KVM or TCG, found the way the qemu builder finds it: a KVM guest must boot, not just /dev/kvm exist."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "TCG (no usable /dev/kvm)"
    qemu = shutil.which("qemu-system-x86_64")
    from rain.config import load_settings
    from rain.host.qemu import kvm_works

    bundles = "builders/qemu/bundles/*/vmlinuz-*"
    kernels = [*Path("/boot").glob("vmlinuz-*"), *load_settings().data_path.glob(bundles),
               *(Path.home() / ".cache/rain-tests/qemu-builder").glob("bundles/*/vmlinuz-*")]  # the tests' builder
    if qemu is None or not kernels:
        return "not probed (/dev/kvm exists, but no qemu or kernel here to boot a KVM guest with)"
    if kvm_works(qemu, str(kernels[0])):
        return "KVM"
    return "TCG (/dev/kvm exists, but a KVM guest does not boot)"


def revision() -> str:
    def git(*argv: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def render(outcomes: list[Outcome], out: Path) -> Path:
    """REPORT.md and one PNG per series, from scratch (old PNGs go, so none is left from another run)."""
    for old in out.glob("*.png"):
        old.unlink()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = ["# Rain benchmark report", "",
             f"- date: {now}", f"- host: {os.cpu_count()} cores", f"- virtualisation: {accel()}",
             f"- git revision: {revision()}", "",
             "Ratio = Rain's figure / the peer's (for MiB/s above 1 is faster; for seconds below 1 is). "
             "A goal is the most the ratio may be. How to read each table: "
             f"[docs/performance.md]({os.path.relpath(ROOT / 'docs' / 'performance.md', out)}).", ""]
    for o in outcomes:
        if o.error:
            when = [f"measured {o.measured}", ""] if o.measured else []
            lines += [f"## {o.name}: failed", "", *when, "```", o.error.strip(), "```", ""]
            continue
        for s in o.sections:
            lines += [f"## {s.stage}", "", f"`bench/{o.name}.py`, measured {s.measured or o.measured}", "",
                      *table(s.rows), ""]
            for series in s.series:
                png = f"{_slug(o.name + '-' + title_and_peer(series)[0])}.png"
                plot(series, out / png)
                lines += [f"![{series.name}]({png})", ""]
            lines += [f"- {n}" for n in s.notes] + ([""] if s.notes else [])
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", type=_names, metavar="NAMES", help=f"run only these (of {','.join(BENCHES)})")
    ap.add_argument("--skip", type=_names, metavar="NAMES", help="run all but these")
    ap.add_argument("--from", dest="source", type=Path, metavar="DIR",
                    help="run nothing: render the report from the NAME.json files already in DIR")
    ap.add_argument("--out", type=Path, default=BENCH / "report", help="where REPORT.md goes (default bench/report)")
    ap.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                    help="extra options for one bench, e.g. 'generate=--pairs 5'; repeatable")
    args = ap.parse_args()
    names = chosen(args.only, args.skip)
    extra = bench_args(args.args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source:
        outcomes = ran = [load(n, args.source) for n in names]
    else:
        ran = [run(n, args.out, extra.get(n, [])) for n in names]
        # the benches not run this time keep their last results in the report (and their plots)
        kept = {n: load(n, args.out) for n in BENCHES if n not in names and earlier_results(n, args.out)}
        outcomes = [next(o for o in ran if o.name == n) if n in names else kept[n] for n in BENCHES
                    if n in names or n in kept]
    report = render(outcomes, args.out)
    failed = [o.name for o in ran if o.error]
    print(f"\n{report}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
