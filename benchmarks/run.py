"""`make bench` (`python -m benchmarks`): per-stage wall time, rows, rows/s and peak memory, against two baselines.

Scale 1 = 100,000 persons over 120 days (about 5.2M events and 0.9M order lines). The raw lake
is generated once per scale and reused, and so is the lake as step 1 leaves it (`history/`
beside `raw/`; delete it to time the bulk load again): a run copies it and goes on from there.
Only the latest run's lake is kept. The run goes the way a lake is really fed:

1. history: every raw file delivered before the last day D is ingested and refined in one go,
   and D - 1 is published (so D has a previous snapshot to move from);
2. daily run: D's files arrive and the production job (`clm run --date D`: ingest, refine,
   snapshot, transitions, validation, writes) runs on top;
3. the snapshot step alone at D, each checked row for row against the published snapshot:
   ours as the daily run computes it (the activity state carried by step 1 plus D's events),
   ours from silver alone (as for a past date), the naive single-partition window, and DuckDB
   SQL, the last three on the same silver Parquet files;
4. optionally (`--backfill-days N`) a backfill of the N dates ending at D;
5. predictions at D: the valid orders as of D (timed apart: a run keeps them from its snapshot),
   then what `predict.enabled` adds to a run: calibration statistics, the fit, every customer.

Figures are printed and written as JSON under bench/results/ (the latest run per scale; the
history of runs is the table in docs/performance.md), with the scaling report across scales
(benchmarks/scaling.py). Benchmarks measure; tests never assert timings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.scaling import write_scaling_report

BASE_PERSONS = 100_000
HISTORY_LAYOUT = 2  # a kept history lake of another layout (1: no activity state) is loaded again
DAYS = 120
START = date(2024, 1, 1)
FEEDS = ("clickstream", "orders")


@dataclass
class Stage:
    name: str
    seconds: float
    rows_in: int
    rows_out: int
    peak_rss_mb: float = (
        0.0  # during this stage: the JVM driver (embedded: also the executor), DuckDB: Python
    )

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0


class _Memory:
    """Peak RSS per stage: the kernel's high-water mark (VmHWM), reset before each stage."""

    def __init__(self) -> None:
        self.pids = [str(os.getpid()), *self._children()]

    @staticmethod
    def _children() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{os.getpid()}\n" in status:
                found.append(pid)
        return found

    def reset(self) -> None:
        for pid in self.pids:
            # "5" resets the peak RSS (Linux >= 4.0); without it the peak is since start
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_mb(self, pid: str) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def jvm_peak_mb(self) -> float:
        return max((self.peak_mb(p) for p in self.pids[1:]), default=0.0)


class _Recorder:
    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.memory = _Memory()

    def timed(self, name, fn, rows_in=lambda: 0, rows_out=lambda: 0):
        self.memory.reset()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        stage = Stage(name, seconds, rows_in(), rows_out(), self.memory.jvm_peak_mb())
        self.add(stage)
        return result

    def add(self, stage: Stage) -> None:
        self.stages.append(stage)
        rate = f"{stage.rows_per_second:>11,.0f} rows/s" if stage.rows_in else " " * 18
        print(
            f"  {stage.name:<22} {stage.seconds:8.1f}s  rows in {stage.rows_in:>11,}  "
            f"out {stage.rows_out:>10,}  {rate}  peak RSS {stage.peak_rss_mb:>6,.0f} MB",
            flush=True,
        )

    def seconds(self, name: str) -> float | None:
        return next((s.seconds for s in self.stages if s.name == name), None)


def deliver(raw: Path, landing: Path, keep) -> int:
    """Hard-link (copy where links are impossible) the raw files whose delivery day passes `keep`."""
    n = 0
    for feed in FEEDS:
        for day_dir in sorted((raw / feed).glob("dt=*")):
            if not keep(date.fromisoformat(day_dir.name[3:])):
                continue
            target = landing / feed / day_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(day_dir.iterdir()):
                if not (target / f.name).exists():
                    try:
                        os.link(f, target / f.name)
                    except OSError:
                        shutil.copy2(f, target / f.name)
                    n += 1
    return n


def run_bench(ctx, scale: float, out_dir: str = "bench", days: int = DAYS, backfill_days: int = 0) -> dict:
    """Generate (or reuse) a raw lake at `scale`, run each stage, print and save the figures."""
    from pyspark import StorageLevel

    from benchmarks.naive import naive_percentiles
    from clm_spark.app import Context, start_with_deps
    from clm_spark.lake import open_lake
    from clm_spark.lifecycle.snapshot import build_snapshot
    from clm_spark.pipeline import Sources, snapshot_frames, snapshot_params
    from clm_spark.sample.generate import generate
    from clm_spark.tables import (
        BRONZE_CLICKSTREAM,
        BRONZE_ORDERS,
        CUSTOMER_SNAPSHOT,
        SILVER_ACTIVITY_STATE,
        SILVER_EVENTS,
        SILVER_ORDERS,
    )

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # --verbose keeps the per-step log lines
        logging.getLogger("clm_spark").setLevel(logging.WARNING)  # the bench prints its own lines
    persons = max(100, int(BASE_PERSONS * scale))
    root = Path(out_dir) / "data" / f"scale-{scale:g}-{days}d"
    raw = root / "raw"
    rec = _Recorder()
    if not (raw / "_bench.json").exists():
        shutil.rmtree(raw, ignore_errors=True)
        stats = generate(raw, persons, days, START, seed=11, bad_rate=0.01)
        lines = stats.event_lines + stats.order_lines
        rec.add(Stage("generate", stats.seconds, lines, lines))
        (raw / "_bench.json").write_text(json.dumps(asdict(stats), default=str))
    for old in root.glob("lake-*"):  # earlier runs' lakes: only the latest is kept
        shutil.rmtree(old, ignore_errors=True)
    lake_root = (root / f"lake-{datetime.now(UTC):%Y%m%dT%H%M%S}").resolve()
    landing = lake_root / "_landing"
    d = START + timedelta(days=days - 1)
    # the lake after step 1, kept so later runs at this scale start from it (delete it to reload)
    template = root / "history"
    reused = (
        json.loads((template / "_bench.json").read_text()) if (template / "_bench.json").exists() else None
    )
    if reused is not None and reused.get("layout") != HISTORY_LAYOUT:
        print("  history lake of an earlier layout: loaded again", flush=True)
        reused = None
    if reused is not None:
        t0 = time.perf_counter()
        shutil.copytree(template, lake_root)
        copy_seconds = time.perf_counter() - t0
    cfg = replace(
        ctx.cfg,
        lake=replace(ctx.cfg.lake, root=str(lake_root)),
        raw=replace(ctx.cfg.raw, clickstream=str(landing / "clickstream"), orders=str(landing / "orders")),
    )
    lake = open_lake(ctx.spark, str(lake_root), cfg.lake.engine)
    bench_ctx = Context(cfg, ctx.model, ctx.spark, lake, ctx.rules)

    def raw_rows() -> int:
        return lake.read(BRONZE_CLICKSTREAM).count() + lake.read(BRONZE_ORDERS).count()

    def silver_rows() -> int:
        return lake.read(SILVER_EVENTS).count() + lake.read(SILVER_ORDERS).count()

    def run(dates, job):
        result = start_with_deps(bench_ctx, dates, job, run_id=f"bench-{job}-{scale:g}", lock=False)
        return asdict(result)

    # 1. history: everything delivered before D, one bulk load, D - 1 published
    deliver(raw, landing, lambda day: day < d)
    runs: dict[str, dict] = {}

    def delivered(job: str) -> int:
        return sum(c["delivered"] for c in runs[job]["counts"].values())

    def timed_run(name: str, dates, job: str, rows_out) -> None:
        rec.timed(name, lambda: runs.setdefault(job, run(dates, job)), lambda: delivered(job), rows_out)

    history_name = f"history load + {d - timedelta(days=1)}"
    if reused is None:
        timed_run(history_name, [d - timedelta(days=1)], "history", silver_rows)
        shutil.rmtree(template, ignore_errors=True)
        shutil.copytree(lake_root, template, ignore=shutil.ignore_patterns("_landing"))
        stage = asdict(rec.stages[-1])
        (template / "_bench.json").write_text(
            json.dumps({"stage": stage, "history": runs["history"], "layout": HISTORY_LAYOUT}, default=str)
        )
    else:  # the figures of the run that loaded it; this run only copied the lake
        runs["history"] = reused["history"]
        rec.add(Stage(**{**reused["stage"], "name": f"{history_name} (earlier run)"}))
        rec.add(Stage("copy of the history lake", copy_seconds, 0, 0))

    # 2. the daily run of D on top of that history
    carried_version = lake.version(SILVER_ACTIVITY_STATE)  # what step 1 carried to the daily run
    new_files = deliver(raw, landing, lambda day: day >= d)
    before = silver_rows()
    timed_run(f"daily run {d}", [d], "daily", lambda: silver_rows() - before)

    # 3. the snapshot step alone, four ways (the last three on the same silver Parquet files)
    params = snapshot_params(cfg)
    read = Sources.read(lake, state_version=carried_version)  # the daily run's inputs
    daily_sources = read if carried_version is not None else replace(read, state=None)
    sources = replace(read, state=None)  # silver alone
    n_silver = silver_rows()

    # each job materialises its rows in memory, as DuckDB's CREATE TABLE does
    def ours(src: Sources) -> None:  # what `publish_dates` computes, kept the way it keeps it
        kept: list = []

        def keep(df):
            kept.append(df.persist(StorageLevel.MEMORY_AND_DISK))
            return df

        snapshot_frames(src, [d], params, ctx.model, keep).snapshot.count()
        for df in kept:
            df.unpersist()

    def naive_job():  # one window over every customer, nothing cached on the way: a first version
        p = replace(params, percentile=naive_percentiles)
        naive = build_snapshot(sources.events, sources.orders, d, p, ctx.model).persist()
        naive.count()
        return naive

    published = lake.read(CUSTOMER_SNAPSHOT).filter(f"snapshot_date = '{d}'")
    n_persons = published.count()
    if daily_sources.state is None:
        print("  no activity state carried to the daily run: ours reads silver alone", flush=True)
    rec.timed("snapshot (ours, daily)", lambda: ours(daily_sources), lambda: n_silver, lambda: n_persons)
    rec.timed("snapshot (ours, silver)", lambda: ours(sources), lambda: n_silver, lambda: n_persons)
    # the rows it timed are the rows compared (computing them again took as long as the job)
    naive = rec.timed("snapshot (naive)", naive_job, lambda: n_silver, lambda: n_persons)
    naive_mismatches = published.exceptAll(naive).count() + naive.exceptAll(published).count()
    naive.unpersist()
    duck = _duckdb(str(lake_root), d, params, ctx.model, n_silver, rec)

    # 5. predictions at D (predict.*): the fit on patterns alone, then every customer's values
    from clm_spark.lifecycle.snapshot import valid_orders_as_of
    from clm_spark.predict.clv import ClvParams, calibration_stats, fit, predictions

    clv_params = ClvParams.of(cfg.predict)
    box: dict = {}  # what each timed step produced, for its rows-out figure
    # a run computes and keeps the valid orders for the snapshot already: the predictions start
    # from them, so what they add to a run is the three steps after this one
    valid = valid_orders_as_of(sources.orders, [d]).persist(StorageLevel.MEMORY_AND_DISK)
    rec.timed(
        "valid orders as of D (a run has them from its snapshot)",
        lambda: box.setdefault("valid", valid.count()),
        lambda: n_silver,
        lambda: box["valid"],
    )
    stats = calibration_stats(valid).persist(StorageLevel.MEMORY_AND_DISK)
    rec.timed(
        "predict: calibration statistics",
        lambda: box.setdefault("customers", stats.count()),
        lambda: n_silver,
        lambda: box["customers"],
    )
    fitted = rec.timed(
        "predict: fit (patterns to the driver + MLE)",
        lambda: box.setdefault("fit", fit(stats, d, clv_params)),
        lambda: box["customers"],
        lambda: box["fit"].purchases.patterns if box["fit"].purchases else 0,
    )
    rec.timed(
        "predict: predictions (every customer)",
        lambda: box.setdefault("predicted", _materialise(predictions(stats, fitted, clv_params))),
        lambda: box["customers"],
        lambda: box["predicted"],
    )
    n_customers = box["customers"]
    stats.unpersist()
    valid.unpersist()

    # 4. backfill: N dates ending at D, from cached silver (what `clm backfill` does)
    if backfill_days > 0:
        dates = [d - timedelta(days=i) for i in range(backfill_days - 1, -1, -1)]
        rec.timed(f"backfill {backfill_days} dates", lambda: run(dates, "backfill"), lambda: n_silver)

    secs = {s.name: s.seconds for s in rec.stages}
    daily_s = secs[f"daily run {d}"]
    result = {
        "scale": scale,
        "persons": persons,
        "days": days,
        "snapshot_date": str(d),
        "engine": lake.engine,
        "validation": cfg.validation.enabled,
        "new_files_in_daily_run": new_files,
        "stages": [{**asdict(s), "rows_per_second": s.rows_per_second} for s in rec.stages],
        "history_counts": runs["history"]["counts"],
        "daily_counts": runs["daily"]["counts"],
        # ours as the daily run computes it (carried state + new events) / the baselines (all silver)
        "snapshot_ours_over_duckdb": _ratio(secs, "snapshot (ours, daily)", "snapshot (DuckDB)"),
        "snapshot_ours_over_naive": _ratio(secs, "snapshot (ours, daily)", "snapshot (naive)"),
        # ours from silver alone (a past date, no state) / the baselines: like for like
        "snapshot_ours_silver_over_duckdb": _ratio(secs, "snapshot (ours, silver)", "snapshot (DuckDB)"),
        "snapshot_ours_silver_over_naive": _ratio(secs, "snapshot (ours, silver)", "snapshot (naive)"),
        "naive_mismatches": naive_mismatches,
        "predict": {
            "status": fitted.reason or "fitted",
            "customers": n_customers,
            "purchase_patterns": fitted.purchases.patterns if fitted.purchases else None,
            "spend_patterns": fitted.spend.patterns if fitted.spend else None,
            "seconds": sum(secs[k] for k in secs if k.startswith("predict:")),
            "fit_seconds": secs["predict: fit (patterns to the driver + MLE)"],
        },
        "duckdb_mismatches": duck,
        "daily_run_seconds": daily_s,
        "backfill_over_daily_run": (
            secs[f"backfill {backfill_days} dates"] / daily_s if backfill_days > 0 else None
        ),
        "peak_rss_mb": {
            "python": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jvm_driver": max(s.peak_rss_mb for s in rec.stages),
        },
    }
    out = Path(out_dir) / "results" / f"bench-{scale:g}-{days}d-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for older in out.parent.glob(f"bench-{scale:g}-{days}d-*.json"):  # only the latest per scale is kept
        older.unlink()
    out.write_text(json.dumps(result, indent=2, default=str))
    for how, key in (
        ("daily (carried state + D's events)", "snapshot_ours"),
        ("from silver alone", "snapshot_ours_silver"),
    ):
        print(
            f"  snapshot step, ours {how}: / DuckDB = {_fmt(result[key + '_over_duckdb'])}, "
            f"/ naive = {_fmt(result[key + '_over_naive'])}"
        )
    print(f"  rows differing from the published snapshot: DuckDB {_fmt(duck)}, naive {naive_mismatches}")
    print(f"  daily run (ingest through validation and writes, one new day): {daily_s:.1f}s")
    pr = result["predict"]
    print(
        f"  predictions: {pr['seconds']:.1f}s for {pr['customers']:,} customers "
        f"(fit {pr['fit_seconds']:.1f}s on {pr['purchase_patterns']} purchase patterns; {pr['status']})"
    )
    if backfill_days > 0:
        print(f"  backfill of {backfill_days} dates / daily run = {result['backfill_over_daily_run']:.2f}")
    print(
        f"  peak RSS: python {result['peak_rss_mb']['python']:.0f} MB, "
        f"JVM driver {result['peak_rss_mb']['jvm_driver']:.0f} MB"
    )
    print(f"  figures written to {out}")
    scaling = write_scaling_report(out.parent)  # with this run's figures at its scale
    if scaling is not None:
        print(f"  scaling across scales: {scaling} and {scaling.with_suffix('.svg')}")
    return result


def _materialise(df) -> int:
    """Compute every column of every row once (as the snapshot steps do: persist + count)."""
    from pyspark import StorageLevel

    kept = df.persist(StorageLevel.MEMORY_AND_DISK)
    n = kept.count()
    kept.unpersist()
    return n


def _ratio(secs: dict[str, float], ours: str, other: str) -> float | None:
    return secs[ours] / secs[other] if secs.get(other) else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _duckdb(root: str, d, params, model, silver_rows: int, rec: _Recorder) -> int | None:
    """The single-node peer on the same silver files; returns rows differing from ours (None: no duckdb)."""
    try:
        import duckdb  # noqa: F401  (a dev dependency: `make bench` has it)
    except ImportError:
        print("  duckdb                 not installed: single-node baseline skipped", flush=True)
        return None
    from benchmarks.duckdb_peer import compare, run_baseline

    rec.memory.reset()
    con, seconds, rows = run_baseline(root, d, params, model)
    rec.add(Stage("snapshot (DuckDB)", seconds, silver_rows, rows, rec.memory.peak_mb(str(os.getpid()))))
    return compare(con, root, d)
