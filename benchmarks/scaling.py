"""How each bench step's time grows with the data: the scaling report of `make bench`.

`python -m benchmarks.scaling [--results bench/results]` reads the latest result of every scale
there (`make bench SCALE=1`, `SCALE=2`, ...) and writes beside them:

- `scaling.md`: seconds and peak memory of each step at each scale, and what doubling the data
  costs between neighbouring scales: (t2 / t1) ** (log 2 / log(s2 / s1)), i.e. 2.0 for a step
  that grows linearly; above DOUBLING_LIMIT it is marked;
- `scaling.svg`: seconds against scale, both axes logarithmic, with a linear-growth guide.

`make bench` writes it after each run once two scales have results. Each scale's figures come
from its own run, so two scales may have been measured hours apart: the table names the files.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

DOUBLING_LIMIT = 2.1  # issue #27: doubling the data may cost at most 2.1x the time, every step


@dataclass(frozen=True)
class Result:
    scale: float
    file: str
    seconds: dict[str, float]  # by step name, dates spelt D and D-1
    peak_mb: dict[str, float]


def step_name(name: str, snapshot_date: date) -> str:
    """A stage's name without what differs between runs: its dates and a reused history's note."""
    name = name.removesuffix(" (earlier run)")
    days = {str(snapshot_date): "D", str(snapshot_date - timedelta(days=1)): "D-1"}
    return re.sub(r"\d{4}-\d{2}-\d{2}", lambda m: days.get(m.group(0), m.group(0)), name)


def latest_results(folder: Path) -> list[Result]:
    """The latest result file of each scale in `folder`, smallest scale first."""
    by_scale: dict[float, Result] = {}
    for path in sorted(folder.glob("bench-*.json")):  # names end in the run's UTC time: latest last
        raw = json.loads(path.read_text())
        d = date.fromisoformat(str(raw["snapshot_date"]))
        stages = [(step_name(s["name"], d), s) for s in raw["stages"]]
        by_scale[float(raw["scale"])] = Result(
            float(raw["scale"]),
            path.name,
            {n: float(s["seconds"]) for n, s in stages},
            {n: float(s["peak_rss_mb"]) for n, s in stages},
        )
    return [by_scale[s] for s in sorted(by_scale)]


def doubling_cost(s1: float, t1: float, s2: float, t2: float) -> float | None:
    """What doubling the data costs in time, from two (scale, seconds) points: 2.0 = linear."""
    if t1 <= 0 or t2 <= 0 or s2 <= s1:
        return None
    return (t2 / t1) ** (math.log(2) / math.log(s2 / s1))


def steps_of(results: list[Result]) -> list[str]:
    """Steps measured at two scales or more, in the order of the run that has the most of them."""
    by_size = sorted(results, key=lambda r: -len(r.seconds))  # stable: ties keep the smaller scale first
    names = dict.fromkeys(n for r in by_size for n in r.seconds)
    return [n for n in names if sum(n in r.seconds for r in results) >= 2]


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def scaling_table(results: list[Result]) -> str:
    """The markdown of `scaling.md` (see the module docstring)."""
    steps = steps_of(results)
    pairs = list(pairwise(results))
    scales = [f"{r.scale:g}x" for r in results]
    lines = [
        "# Bench scaling: time and peak memory per step against the data scale",
        "",
        f"Doubling cost = (t2 / t1) ** (log 2 / log(s2 / s1)) between neighbouring scales: 2.00 is "
        f"linear growth; above {DOUBLING_LIMIT} it is marked **over**. Files: "
        + ", ".join(f"{r.scale:g}x `{r.file}`" for r in results)
        + ".",
        "",
        _row(
            ["step", *[f"{s} s" for s in scales], *[f"doubling {a.scale:g}x→{b.scale:g}x" for a, b in pairs]]
        ),
        "|---|" + "---:|" * (len(results) + len(pairs)),
    ]
    over = 0
    for step in steps:
        secs = [_cell(r.seconds.get(step), ".1f") for r in results]
        costs = []
        for a, b in pairs:
            cost = None
            if step in a.seconds and step in b.seconds:
                cost = doubling_cost(a.scale, a.seconds[step], b.scale, b.seconds[step])
            flagged = cost is not None and cost > DOUBLING_LIMIT
            over += flagged
            costs.append(_cell(cost, ".2f") + (" **over**" if flagged else ""))
        lines.append(_row([step, *secs, *costs]))
    lines += [
        "",
        f"{over} step pair(s) over {DOUBLING_LIMIT}.",
        "",
        "Peak RSS per step, MB (the JVM driver for Spark steps, the Python process for DuckDB):",
        "",
        _row(["step", *scales]),
        "|---|" + "---:|" * len(results),
    ]
    for step in steps:
        lines.append(_row([step, *[_cell(r.peak_mb.get(step), ".0f") for r in results]]))
    return "\n".join(lines) + "\n"


def scaling_plot(results: list[Result], path: Path) -> None:
    """`scaling.svg`: each step's seconds against scale, log-log, and a linear-growth guide."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5))  # no pyplot: no global backend or open-figure state, as reports/html.py
    ax = fig.subplots()
    for step in steps_of(results):
        points = [(r.scale, r.seconds[step]) for r in results if step in r.seconds]
        ax.plot(*zip(*points, strict=True), marker="o", label=step)
    lo, hi = results[0].scale, results[-1].scale
    top = max(max(r.seconds.values()) for r in results)
    ax.plot([lo, hi], [top * lo / hi, top], linestyle=":", color="grey", label="linear (x2 per doubling)")
    ax.set(xscale="log", yscale="log", xlabel="scale (1 = 100,000 persons)", ylabel="seconds")
    ax.set_title("bench steps against data scale")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    with rc_context({"svg.hashsalt": "clm-spark"}):  # the same figures give the same file
        fig.savefig(path, format="svg", metadata={"Date": None})


def write_scaling_report(folder: Path) -> Path | None:
    """Write scaling.md and scaling.svg in `folder`; None (nothing written) below two scales."""
    results = latest_results(folder)
    if len(results) < 2:
        return None
    (folder / "scaling.md").write_text(scaling_table(results))
    scaling_plot(results, folder / "scaling.svg")
    return folder / "scaling.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--results", default="bench/results", help="folder of bench results (default bench/results)"
    )
    args = parser.parse_args(argv)
    written = write_scaling_report(Path(args.results))
    if written is None:
        print(
            f"benchmarks.scaling: error: fewer than two scales have results in {args.results}",
            file=sys.stderr,
        )
        return 2
    print(written.read_text(), end="")
    print(f"written: {written} and {written.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
