"""Readable console summary of the latest published snapshot."""

from __future__ import annotations

from typing import TextIO

from pyspark.sql import functions as F

from clm_spark.lake import Lake
from clm_spark.pipeline import published_dates
from clm_spark.tables import AUDIENCE_CHANGES, CUSTOMER_SNAPSHOT, RFM_CUTPOINTS, SEGMENT_SUMMARY


def print_summary(lake: Lake, out: TextIO) -> None:
    """Print the segment summary of the latest date (a ~14-row aggregate, safe to collect)."""
    dates = published_dates(lake)
    if not dates:
        print("no snapshot published yet", file=out)
        return
    d = dates[-1]
    rows = (
        lake.read(SEGMENT_SUMMARY)
        .filter(F.col("snapshot_date") == F.lit(d))
        .orderBy("stage", "segment")
        .collect()
    )
    total = sum(r.persons for r in rows)
    print(
        f"\nSegment summary for {d} (population {total:,}; dates published: {', '.join(map(str, dates))})",
        file=out,
    )
    print(
        f"{'stage':<15}{'segment':<22}{'persons':>9}{'share':>8}{'entered':>9}{'left':>7}{'avg monetary':>14}",
        file=out,
    )
    for r in rows:
        avg = f"{r.avg_monetary}" if r.avg_monetary is not None else "-"
        print(
            f"{r.stage:<15}{r.segment:<22}{r.persons:>9,}{r.share:>8.1%}{r.entered:>9,}{r.left:>7,}{avg:>14}",
            file=out,
        )
    _print_activation(lake, d, out)
    degenerate = (
        lake.read(RFM_CUTPOINTS)
        .filter((F.col("snapshot_date") == F.lit(d)) & F.col("is_degenerate"))
        .select("dimension")
        .distinct()
        .collect()
    )
    if degenerate:
        dims = ", ".join(sorted(r.dimension for r in degenerate))
        print(f"note: RFM dimension(s) {dims} have fewer distinct scores than bins (many ties)", file=out)
        print(
            f"      `clm segments check --date {d}` shows the share per score; rfm.scoring can score"
            " a dimension by configured thresholds instead (README: Configuration)",
            file=out,
        )


def _print_activation(lake: Lake, d, out: TextIO) -> None:
    """The control group's size and the day's audience changes (two one-row aggregates)."""
    if not lake.exists(AUDIENCE_CHANGES):
        return
    on_d = F.col("snapshot_date") == F.lit(d)
    flags = (
        lake.read(CUSTOMER_SNAPSHOT)
        .filter(on_d)
        .agg(
            F.count(F.lit(1)).alias("persons"),
            F.count(F.when(F.col("is_control"), 1)).alias("control"),
            F.count(F.when(F.col("control_mixed"), 1)).alias("mixed"),
        )
        .first()
    )
    kinds = {
        r.change: r["count"]
        for r in lake.read(AUDIENCE_CHANGES).filter(on_d).groupBy("change").count().collect()
    }
    share = flags.control / flags.persons if flags.persons else 0.0
    print(
        f"control group: {flags.control:,} persons ({share:.1%}; {flags.mixed:,} mixed by identity merges); "
        f"audience changes on {d}: "
        + ", ".join(f"{kinds.get(k, 0):,} {k}" for k in ("entered", "left", "moved")),
        file=out,
    )
