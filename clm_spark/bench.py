"""`clm bench`: per-stage wall time, rows, rows/s and peak driver memory, plus the naive baseline.

Scale 1 = 100,000 persons over 60 days. Figures are printed and written as JSON under
bench/results/ so runs can be compared. Benchmarks measure; tests never assert timings.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

BASE_PERSONS = 100_000
DAYS = 60
START = date(2024, 1, 1)


@dataclass
class Stage:
    name: str
    seconds: float
    rows_in: int
    rows_out: int

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0


def _jvm_peak_rss_mb() -> float:
    """Peak RSS of the local JVM driver (a child of this process), read from /proc."""
    best = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(os.getpid()) and "VmHWM" in fields:
            best = max(best, int(fields["VmHWM"].split()[0]) / 1024)
    return best


def _timed(name, fn, rows_in_fn, rows_out_fn, stages):
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    stages.append(Stage(name, seconds, rows_in_fn(), rows_out_fn()))
    print(
        f"  {name:<12} {seconds:8.1f}s  rows in {stages[-1].rows_in:>12,}  out {stages[-1].rows_out:>12,}  "
        f"{stages[-1].rows_per_second:>12,.0f} rows/s",
        flush=True,
    )
    return result


def run_bench(ctx, scale: float, out_dir: str = "bench") -> dict:
    """Generate (or reuse) a raw lake at `scale`, run each stage, print and save the figures."""
    from clm_spark.ingest.bronze import ingest_feed
    from clm_spark.ingest.generate import generate
    from clm_spark.ingest.silver import refine_clickstream, refine_orders
    from clm_spark.lake import open_lake
    from clm_spark.lifecycle.snapshot import build_snapshot
    from clm_spark.pipeline import Sources, publish_date, snapshot_params
    from clm_spark.tables import (
        BRONZE_CLICKSTREAM,
        BRONZE_ORDERS,
        CUSTOMER_SNAPSHOT,
        SILVER_EVENTS,
        SILVER_ORDERS,
    )

    persons = max(100, int(BASE_PERSONS * scale))
    root = Path(out_dir) / "data" / f"scale-{scale:g}"
    raw = root / "raw"
    stages: list[Stage] = []
    if not (raw / "clickstream").exists():
        stats = generate(raw, persons, DAYS, START, seed=11, bad_rate=0.01)
        stages.append(
            Stage(
                "generate",
                stats.seconds,
                stats.event_lines + stats.order_lines,
                stats.event_lines + stats.order_lines,
            )
        )
        print(f"  generate     {stats.seconds:8.1f}s  {stats.rate:,.0f} lines/s", flush=True)
    lake_root = root / f"lake-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    lake = open_lake(ctx.spark, str(lake_root.resolve()), ctx.cfg.lake.engine)
    run_id, now = f"bench-{scale:g}", datetime.now(UTC)
    cfg = ctx.cfg

    def bronze_rows() -> int:
        return lake.read(BRONZE_CLICKSTREAM).count() + lake.read(BRONZE_ORDERS).count()

    _timed(
        "ingest",
        lambda: [
            ingest_feed(ctx.spark, lake, f, str((raw / f).resolve()), run_id, now)
            for f in ("clickstream", "orders")
        ],
        bronze_rows,  # delivered lines in = bronze rows out
        bronze_rows,
        stages,
    )
    _timed(
        "refine",
        lambda: (refine_clickstream(lake, cfg, run_id), refine_orders(lake, cfg, run_id)),
        lambda: stages[-1].rows_out,
        lambda: lake.read(SILVER_EVENTS).count() + lake.read(SILVER_ORDERS).count(),
        stages,
    )
    d = START + timedelta(days=DAYS - 1)
    naive_params = replace(snapshot_params(cfg), percentile="naive")
    sources = Sources.read(lake)  # every stage reads silver from Parquet, as DuckDB does
    silver_rows = stages[-1].rows_out
    _timed(
        "snapshot",
        lambda: (
            build_snapshot(
                sources.events, sources.orders, sources.identity, d, snapshot_params(cfg), ctx.model
            )
            .write.format("noop")
            .mode("overwrite")
            .save()
        ),
        lambda: silver_rows,
        lambda: 0,
        stages,
    )
    _timed(
        "naive",
        lambda: (
            build_snapshot(sources.events, sources.orders, sources.identity, d, naive_params, ctx.model)
            .write.format("noop")
            .mode("overwrite")
            .save()
        ),
        lambda: silver_rows,
        lambda: 0,
        stages,
    )
    _timed(
        "publish",
        lambda: publish_date(ctx.spark, lake, cfg, ctx.model, d, run_id, sources, ctx.rules),
        lambda: silver_rows,
        lambda: lake.read(CUSTOMER_SNAPSHOT).count(),
        stages,
    )
    ours = lake.read(CUSTOMER_SNAPSHOT)
    naive = build_snapshot(sources.events, sources.orders, sources.identity, d, naive_params, ctx.model)
    naive_mismatches = ours.exceptAll(naive).count() + naive.exceptAll(ours).count()
    duck = _duckdb(str(lake_root.resolve()), d, snapshot_params(cfg), ctx.model, silver_rows, stages)
    seconds = {s.name: s.seconds for s in stages}
    result = {
        "scale": scale,
        "persons": persons,
        "engine": lake.engine,
        "stages": [{**asdict(s), "rows_per_second": s.rows_per_second} for s in stages],
        "snapshot_ours_over_duckdb": seconds["snapshot"] / seconds["duckdb"] if duck is not None else None,
        "snapshot_ours_over_naive": seconds["snapshot"] / seconds["naive"],
        "naive_mismatches": naive_mismatches,
        "duckdb_mismatches": duck,
        "peak_rss_mb": {
            "python": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jvm_driver": _jvm_peak_rss_mb(),
        },
    }
    out = Path(out_dir) / "results" / f"bench-{scale:g}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    ratio = result["snapshot_ours_over_duckdb"]
    print(
        f"  snapshot step: ours / DuckDB = {'n/a' if ratio is None else f'{ratio:.2f}'}, "
        f"ours / naive = {result['snapshot_ours_over_naive']:.2f}; rows differing from ours: "
        f"DuckDB {duck if duck is not None else 'n/a'}, naive {naive_mismatches}"
    )
    print(
        f"  peak RSS: python {result['peak_rss_mb']['python']:.0f} MB, "
        f"JVM driver {result['peak_rss_mb']['jvm_driver']:.0f} MB"
    )
    print(f"  figures written to {out}")
    return result


def _duckdb(root: str, d, params, model, silver_rows: int, stages: list[Stage]) -> int | None:
    """The single-node peer on the same silver files; returns rows differing from ours (None: no duckdb)."""
    try:
        import duckdb  # noqa: F401  (a dev dependency: `make bench` has it)
    except ImportError:
        print("  duckdb       not installed: single-node baseline skipped", flush=True)
        return None
    from clm_spark.baseline import compare, run_baseline

    con, seconds, rows = run_baseline(root, d, params, model)
    stages.append(Stage("duckdb", seconds, silver_rows, rows))
    print(
        f"  {'duckdb':<12} {seconds:8.1f}s  rows in {silver_rows:>12,}  out {rows:>12,}  "
        f"{silver_rows / seconds if seconds else 0:>12,.0f} rows/s",
        flush=True,
    )
    return compare(con, root, d)
