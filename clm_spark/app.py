"""Command implementations: load config, build the session and lake, call the pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from clm_spark import compat, failpoints
from clm_spark.config import Config, load_config, parse_date
from clm_spark.errors import ClmError, ConfigError, ValidationFailed
from clm_spark.lifecycle.segments import SegmentModel, coverage_grid, load_segments

log = logging.getLogger(__name__)


@dataclass
class Context:
    cfg: Config
    model: SegmentModel
    spark: object
    lake: object
    rules: object = None  # quality.Rules, None when validation is disabled


def prepare(config_path: str) -> tuple[Config, SegmentModel]:
    """Everything that can be checked before a session exists or a byte is written."""
    cfg = load_config(config_path)
    model = load_segments(cfg.segments, cfg.rfm.score_bins)
    return cfg, model


def load_quality_rules(cfg: Config, model: SegmentModel):
    if not cfg.validation.enabled:
        return None
    from clm_spark.quality import load_rules

    return load_rules(cfg.validation.expectations, model)


def open_context(cfg: Config, model: SegmentModel) -> Context:
    from clm_spark.lake import open_lake
    from clm_spark.session import build_session

    rules = load_quality_rules(cfg, model)  # a bad expectations file fails before the session starts
    spark = build_session("clm-spark", cfg.spark)
    compat.set_log_level(spark, "WARN")
    lake = open_lake(
        spark, cfg.lake.root, cfg.lake.engine, failpoints.write_hooks(), cfg.lake.storage_options
    )
    return Context(cfg, model, spark, lake, rules)


def run_dates(ctx: Context, dates: list[date], job: str, tamper=None) -> dict:
    """Ingest + refine once, then publish the dates (all at once); always records the run.

    The whole run holds the lake lock (see clm_spark.lock): a run for an overlapping date fails
    at once without writing anything, a run for other dates waits for this one.
    """
    from clm_spark.lock import lake_lock
    from clm_spark.runs import new_run_id

    run_id = new_run_id(job)
    with lake_lock(ctx.cfg.lake.root, run_id, dates, ctx.cfg.lake.lock_wait_seconds, ctx.cfg.lake.lock):
        return _run_locked(ctx, dates, job, run_id, tamper)


def _run_locked(ctx: Context, dates: list[date], job: str, run_id: str, tamper) -> dict:
    from clm_spark.pipeline import Sources, ingest_and_refine, publish_dates
    from clm_spark.runs import RunRecord

    run = RunRecord(run_id, job, datetime.now(UTC), ctx.lake.engine, snapshot_dates=dates)
    try:
        counts = ingest_and_refine(ctx.spark, ctx.lake, ctx.cfg, run.run_id, run.started_at, ctx.rules)
        run.counts = {k: v.as_dict() for k, v in counts.items()}
        published = publish_dates(
            ctx.spark,
            ctx.lake,
            ctx.cfg,
            ctx.model,
            dates,
            run.run_id,
            Sources.read(ctx.lake),
            ctx.rules,
            tamper,
        )
        run.table_versions.update(published.versions)
        run.validation = published.validation
        run.status = "succeeded"
        return {
            "run_id": run.run_id,
            "counts": run.counts,
            "versions": run.table_versions,
            "validation": run.validation,
        }
    except ValidationFailed as exc:
        run.status, run.error, run.validation = "failed_validation", str(exc), str(exc)
        raise
    except ClmError as exc:
        run.status, run.error = "failed", str(exc)
        raise
    except Exception as exc:
        run.status, run.error = (
            "failed",
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
        raise ClmError(f"run {run.run_id} failed: {run.error}") from exc
    finally:
        failpoints.hit("before_run_record")
        try:
            run.write(ctx.lake)
        except Exception:
            if run.status == "succeeded":
                raise
            log.exception("run %s: its failure could not be recorded in meta/pipeline_runs", run.run_id)


def _date_range(start: date, end: date) -> list[date]:
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def generate_command(args: argparse.Namespace) -> int:
    from clm_spark.ingest.generate import generate

    if args.persons < 1 or args.days < 1 or not 0 <= args.bad_rate < 1:
        raise ConfigError("--persons and --days must be >= 1 and --bad-rate in [0, 1)")
    stats = generate(
        args.out, args.persons, args.days, parse_date(args.start, "--start"), args.seed, args.bad_rate
    )
    print(
        f"wrote {stats.event_lines:,} event lines and {stats.order_lines:,} order lines in {stats.files} files "
        f"to {args.out} in {stats.seconds:.1f}s ({stats.rate:,.0f} lines/s); bad lines injected: {stats.bad_lines:,}"
    )
    return 0


def segments_check_command(config_path: str) -> int:
    cfg, model = prepare(config_path)
    print(f"{cfg.segments}: {len(model.rules)} segments, {model.score_bins} score bins - OK")
    coverage_grid(model)
    return 0


def run_command(config_path: str, day: str) -> int:
    d = parse_date(day)
    cfg, model = prepare(config_path)
    result = run_dates(open_context(cfg, model), [d], "run")
    _print_counts(result)
    return 0


def backfill_command(config_path: str, start: str, end: str) -> int:
    dates = _date_range(parse_date(start, "--start"), parse_date(end, "--end"))
    cfg, model = prepare(config_path)
    result = run_dates(open_context(cfg, model), dates, "backfill")
    _print_counts(result)
    return 0


def _print_counts(result: dict) -> None:
    print(f"run {result['run_id']} succeeded")
    for line in result["validation"].split("; "):
        print(f"  validation {line}")
    for feed, c in result["counts"].items():
        print(
            f"  {feed:<11} delivered {c['delivered']:>10,}  accepted {c['accepted']:>10,}  "
            f"quarantined {c['quarantined']:>8,}  duplicates {c['duplicates']:>8,}"
        )


def demo_command(config_path: str, args: argparse.Namespace) -> int:
    from clm_spark.ingest.generate import generate
    from clm_spark.report import print_summary

    cfg, model = prepare(config_path)
    raw_root = Path(cfg.raw.clickstream).parent
    if Path(cfg.raw.orders).parent != raw_root or "://" in cfg.raw.clickstream:
        raise ConfigError("demo needs raw.clickstream and raw.orders as local sibling folders")
    start = date(2024, 1, 1)
    if not (raw_root / "clickstream").exists():
        stats = generate(raw_root, args.persons, args.days, start, seed=7, bad_rate=0.01)
        print(
            f"generated {stats.event_lines:,} events and {stats.order_lines:,} order records under {raw_root}"
        )
    last = start + timedelta(days=args.days - 1)
    dates = _date_range(last - timedelta(days=args.snapshots - 1), last)
    ctx = open_context(cfg, model)
    result = run_dates(ctx, dates, "demo")
    _print_counts(result)
    print_summary(ctx.lake, sys.stdout)
    print(f"\nreport: {write_report(cfg, None, ctx.lake)}")
    return 0


def write_report(cfg: Config, out: str | None, lake=None) -> str:
    """Write the offline HTML report of the lake; the default path is under <lake.root>/_reports/.

    With a lake (a Spark session) the gold aggregates are read and the page written through Spark,
    so any lake URI works; without one they are read with `deltalake` and written locally.
    """
    from clm_spark.reporting import load_report_data, render_html_report

    data = load_report_data(cfg.lake.root, lake)
    page = render_html_report(data)
    if out is None:
        out = f"{cfg.lake.root.rstrip('/')}/_reports/clm-report-{data.latest}.html"
    if lake is not None:
        lake.storage.write_text(out, page)
        return out
    if "://" in out and not out.startswith("file://"):
        raise ConfigError("lake.root is not a local folder: give the report a local path with --out")
    local = Path(out.removeprefix("file://"))
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ClmError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return str(local)


def report_command(config_path: str, out: str | None) -> int:
    """The report needs no Spark session on a delta-rs lake; delta-spark lakes are read through Spark."""
    cfg = load_config(config_path)
    lake = None
    if cfg.lake.engine == "delta-spark":
        lake = open_context(cfg, load_segments(cfg.segments, cfg.rfm.score_bins)).lake
    print(f"report: {write_report(cfg, out, lake)}")
    return 0


def bench_command(config_path: str, scale: float, days: int = 120, backfill_days: int = 0) -> int:
    from clm_spark.bench import run_bench

    if scale <= 0:
        raise ConfigError("--scale must be > 0")
    if days < 2:
        raise ConfigError("--days must be at least 2 (history plus one daily run)")
    if not 0 <= backfill_days <= days:
        raise ConfigError(f"--backfill-days must be between 0 and --days ({days})")
    cfg, model = prepare(config_path)
    print(f"clm bench at scale {scale:g} ({days} days)")
    run_bench(open_context(cfg, model), scale, days=days, backfill_days=backfill_days)
    return 0


def vacuum_command(config_path: str, retain_hours: float, force: bool) -> int:
    from clm_spark.lock import lake_lock
    from clm_spark.maintenance import check_retention, vacuum_lake

    check_retention(retain_hours, force)
    cfg, model = prepare(config_path)
    lake = open_context(cfg, model).lake
    with lake_lock(cfg.lake.root, "vacuum", [], cfg.lake.lock_wait_seconds, cfg.lake.lock):  # never mid-write
        removed = vacuum_lake(lake, retain_hours, force)
    for table, n in removed.items():
        print(f"  {table:<32} {n:>6} file(s) removed")
    return 0
