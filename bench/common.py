"""What the benches share: their results as data, written with `--json FILE`, and the timed command.

Every bench prints its tables for a person. With `--json FILE` it also writes the same figures as a
list of sections, so bench/report.py can tabulate and plot them without parsing text:

    [{"stage": "...",
      "rows": [{"measure", "figure", "peer", "peer_figure", "ratio", "goal", "unit"}],
      "series": [{"name", "x_label", "y_label", "points": [[x, y]], "peer_points": [[x, y]] or null}],
      "notes": ["..."]}]

A ratio is Rain's figure over the peer's (or the median of such ratios, where pairs were run); a
goal, where there is one, is the most that ratio may be. Timings are printed and written, never
asserted: a slow machine makes a slow figure, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Point = tuple[float, float]


@dataclass
class Row:
    """One figure of Rain's against the same measure of its peer (another tool, or Rain's own baseline)."""

    measure: str
    figure: float
    peer: str
    peer_figure: float
    unit: str = "s"
    goal: float | None = None
    ratio: float | None = None  # figure / peer_figure unless given (a median of pair ratios)

    def __post_init__(self) -> None:
        if self.ratio is None and self.peer_figure:
            self.ratio = self.figure / self.peer_figure

    @property
    def met(self) -> bool | None:
        """Whether the ratio is within the goal; None where there is no goal (the figure is for reading)."""
        if self.goal is None or self.ratio is None:
            return None
        return self.ratio <= self.goal


@dataclass
class Series:
    """How a cost grows with size: Rain's points and, where measured, the peer's at the same x.

    A name ending in "(peer: WHAT)" gives the report's plot its legend for the peer's line."""

    name: str
    x_label: str
    y_label: str
    points: list[Point]
    peer_points: list[Point] | None = None


@dataclass
class Section:
    """One stage's results: one table in the report, one plot per series, the notes under them."""

    stage: str
    rows: list[Row] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured: str = ""
    """When, if this section was measured apart from the rest of its bench's results."""


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the results to FILE as JSON (what bench/report.py reads)")


def numbers(text: str) -> list[int]:
    """A comma-separated list of positive integers (sizes, counts), as an argparse type."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"want positive numbers, not {text!r}")
    return values


def write_json(path: Path | None, sections: list[Section]) -> None:
    if path is not None:
        path.write_text(json.dumps([asdict(s) for s in sections], indent=1) + "\n")


def _points(raw: list[list[float]] | None) -> list[Point] | None:
    return None if raw is None else [(float(x), float(y)) for x, y in raw]


def read_json(path: Path) -> list[Section]:
    """The sections a bench wrote (so a long run's results can be rendered again)."""
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return [Section(stage=s["stage"], rows=[Row(**r) for r in s["rows"]],
                    series=[Series(x["name"], x["x_label"], x["y_label"], _points(x["points"]) or [],
                                   _points(x["peer_points"])) for x in s["series"]],
                    notes=list(s["notes"]), measured=str(s.get("measured") or "")) for s in data]


def fmt(value: float, unit: str) -> str:
    return f"{value:.1f} {unit}" if unit else f"{value:.1f}"


def format_rows(rows: list[Row]) -> list[str]:
    """The rows as a plain-text table for the console."""
    width = max([len(r.measure) for r in rows] + [7])
    lines = [f"{'measure':{width}} {'rain':>11} {'peer':>11} {'ratio':>6} {'goal':>7}"]
    for r in rows:
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6}"
        goal = f"<={r.goal:.2f}" if r.goal is not None else "-"
        met = {True: "ok", False: "MISSED", None: ""}[r.met]
        lines.append(f"{r.measure:{width}} {fmt(r.figure, r.unit):>11} {fmt(r.peer_figure, r.unit):>11} "
                     f"{ratio} {goal:>7} {met}".rstrip())
    return lines


def bench_env(config: Path) -> dict[str, str]:
    """This environment without the caller's RAIN_* settings: a bench uses only what it sets itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_CONFIG": str(config), "NO_COLOR": "1"})
    return env


def _cpu_ticks() -> list[int]:
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def _busy_seconds() -> float:
    """CPU time all processes on this machine used so far (from /proc/stat)."""
    ticks = _cpu_ticks()
    return (sum(ticks) - ticks[3] - ticks[4] - ticks[7]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait, steal


def _steal_seconds() -> float:
    """CPU time the hypervisor under this machine gave to others while we were runnable (from /proc/stat)."""
    return _cpu_ticks()[7] / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Run:
    """One timed command: wall seconds, the CPU it used, the CPU everything else used meanwhile.

    A failed command ends the bench with its stderr: a figure from a failed build would mislead."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        busy0, own0, steal0, t0 = _busy_seconds(), _children_cpu(), _steal_seconds(), time.monotonic()
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            # stdout too: a batch prints each build's error in its table there
            sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}\n{r.stdout[-3000:]}")
        self.wall = time.monotonic() - t0
        self.cpu = _children_cpu() - own0
        self.others = max(0.0, _busy_seconds() - busy0 - self.cpu)
        self.steal = _steal_seconds() - steal0
        self.stdout = r.stdout

    @property
    def disturbed(self) -> bool:
        return self.others > 0.1 * self.wall  # others kept a tenth of a core busy
