"""The run lifecycle and the commands behind `clm`; nothing here prints (the CLI does).

`start()` reads the config and builds the session and lake; `start_with_deps()` does the work
with explicit dependencies (tests and tools pass their own) and returns a typed result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from clm_spark import compat, failpoints
from clm_spark.config import Config, load_config
from clm_spark.errors import ClmError, ConfigError, ValidationFailed
from clm_spark.lifecycle.segments import SegmentModel, load_segments

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from clm_spark.lake import Lake
    from clm_spark.quality import Rules

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """The explicit dependencies of a run."""

    cfg: Config
    model: SegmentModel
    spark: SparkSession
    lake: Lake
    rules: Rules | None = None  # None when validation is disabled
    clock: Callable[[], datetime] = utc_now  # the run's start time (ingestion time, clock errors)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    dates: list[date]
    counts: dict[str, dict[str, int]]  # feed -> delivered, accepted, quarantined, duplicates
    versions: dict[str, int | None] = field(default_factory=dict)  # table -> Delta version written
    validation: str = "not run"


def prepare(config_path: str) -> tuple[Config, SegmentModel]:
    """Everything that can be checked before a session exists or a byte is written."""
    cfg = load_config(config_path)
    model = load_segments(cfg.segments, cfg.rfm.score_bins)
    return cfg, model


def load_quality_rules(cfg: Config, model: SegmentModel) -> Rules | None:
    if not cfg.validation.enabled:
        return None
    from clm_spark.quality import load_rules

    return load_rules(cfg.validation.expectations, model, cfg.activation.control_share)


def open_context(cfg: Config, model: SegmentModel) -> Context:
    """Build the session and the lake for a checked config."""
    from clm_spark.lake import open_lake
    from clm_spark.session import build_session

    rules = load_quality_rules(cfg, model)  # a bad expectations file fails before the session starts
    spark = build_session("clm-spark", cfg.spark)
    compat.set_log_level(spark, "WARN")
    lake = open_lake(
        spark, cfg.lake.root, cfg.lake.engine, failpoints.write_hooks(), cfg.lake.storage_options
    )
    return Context(cfg, model, spark, lake, rules)


def start(config_path: str, dates: list[date], job: str) -> RunResult:
    """Read the config, build the session and the lake, run the dates."""
    cfg, model = prepare(config_path)
    return start_with_deps(open_context(cfg, model), dates, job)


def start_with_deps(
    ctx: Context, dates: list[date], job: str, *, run_id: str | None = None, lock: bool = True
) -> RunResult:
    """Ingest + refine once, then publish the dates (all at once); always records the run.

    The whole run holds the lake lock (see clm_spark.lock) unless `lock` is false (a caller that
    already serialises runs): a run for an overlapping date fails at once without writing
    anything, a run for other dates waits for this one.
    """
    from clm_spark.lock import lake_lock
    from clm_spark.runs import new_run_id

    run_id = run_id or new_run_id(job)
    if not lock:
        return _run(ctx, dates, job, run_id)
    lake_cfg = ctx.cfg.lake
    with lake_lock(lake_cfg.root, run_id, dates, lake_cfg.lock_wait_seconds, lake_cfg.lock):
        return _run(ctx, dates, job, run_id)


def _run(ctx: Context, dates: list[date], job: str, run_id: str) -> RunResult:
    from clm_spark.pipeline import Sources, ingest_and_refine, publish_dates
    from clm_spark.runs import RunRecord

    run = RunRecord(run_id, job, ctx.clock(), ctx.lake.engine, snapshot_dates=dates)
    try:
        counts = ingest_and_refine(ctx.spark, ctx.lake, ctx.cfg, run.run_id, run.started_at, ctx.rules)
        run.counts = {k: v.as_dict() for k, v in counts.items()}
        sources = Sources.read(ctx.lake)
        published = publish_dates(
            ctx.spark, ctx.lake, ctx.cfg, ctx.model, dates, run.run_id, sources, ctx.rules
        )
        run.table_versions.update(published.versions)
        run.validation = published.validation
        run.status = "succeeded"
        return RunResult(run.run_id, list(dates), run.counts, dict(run.table_versions), run.validation)
    except ValidationFailed as exc:
        run.status, run.error, run.validation = "failed_validation", str(exc), str(exc)
        raise
    except ClmError as exc:
        run.status, run.error = "failed", str(exc)
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        run.status, run.error = "failed", f"{type(exc).__name__}: {first_line}"
        raise ClmError(f"run {run.run_id} failed: {run.error}") from exc
    finally:
        failpoints.hit("before_run_record")
        try:
            run.write(ctx.lake)
        except Exception:
            if run.status == "succeeded":
                raise
            log.exception("run %s: its failure could not be recorded in meta/pipeline_runs", run.run_id)


def date_range(start: date, end: date) -> list[date]:
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass(frozen=True)
class DemoResult:
    run: RunResult
    lake: Lake
    report: str
    generated: str | None  # what was generated, None when the raw lake was there already


def demo(config_path: str, persons: int, days: int, snapshots: int) -> DemoResult:
    """Generate a raw lake (once), publish its last `snapshots` days, write the HTML report."""
    from clm_spark.sample.generate import generate

    cfg, model = prepare(config_path)
    raw_root = Path(cfg.raw.clickstream).parent
    if Path(cfg.raw.orders).parent != raw_root or "://" in cfg.raw.clickstream:
        raise ConfigError("demo needs raw.clickstream and raw.orders as local sibling folders")
    start_day = date(2024, 1, 1)
    generated = None
    if not (raw_root / "clickstream").exists():
        stats = generate(raw_root, persons, days, start_day, seed=7, bad_rate=0.01)
        generated = f"{stats.event_lines:,} events and {stats.order_lines:,} order records under {raw_root}"
    last = start_day + timedelta(days=days - 1)
    ctx = open_context(cfg, model)
    result = start_with_deps(ctx, date_range(last - timedelta(days=snapshots - 1), last), "demo")
    return DemoResult(result, ctx.lake, write_report(cfg, None, ctx.lake), generated)


def write_report(cfg: Config, out: str | None, lake: Lake | None = None) -> str:
    """Write the offline HTML report of the lake; the default path is under <lake.root>/_reports/.

    With a lake (a Spark session) the gold aggregates are read and the page written through Spark,
    so any lake URI works; without one they are read with `deltalake` and written locally.
    """
    from clm_spark.reports.html import load_report_data, render_html_report, write_html_report

    data = load_report_data(cfg.lake.root, lake)
    if out is None:
        out = f"{cfg.lake.root.rstrip('/')}/_reports/clm-report-{data.latest}.html"
    if lake is not None:
        lake.storage.write_text(out, render_html_report(data))
        return out
    if "://" in out and not out.startswith("file://"):
        raise ConfigError("lake.root is not a local folder: give the report a local path with --out")
    return write_html_report(data, out.removeprefix("file://"))


def report(config_path: str, out: str | None) -> str:
    """The report needs no Spark session on a delta-rs lake; delta-spark lakes are read through Spark."""
    cfg = load_config(config_path)
    lake = None
    if cfg.lake.engine == "delta-spark":
        lake = open_context(cfg, load_segments(cfg.segments, cfg.rfm.score_bins)).lake
    return write_report(cfg, out, lake)


def vacuum(config_path: str, retain_hours: float, force: bool) -> dict[str, int]:
    """Vacuum every table with its engine, under the lake lock (never mid-write)."""
    from clm_spark.lock import lake_lock
    from clm_spark.maintenance import check_retention, vacuum_lake

    check_retention(retain_hours, force)
    cfg, model = prepare(config_path)
    lake = open_context(cfg, model).lake
    with lake_lock(cfg.lake.root, "vacuum", [], cfg.lake.lock_wait_seconds, cfg.lake.lock):
        return vacuum_lake(lake, retain_hours, force)


@dataclass(frozen=True)
class EvalResult:
    """`clm predict-eval`: the fit of the calibration end, its holdout figures, what was written."""

    fit: object  # predict.clv.ClvFit
    holdout: object  # predict.clv.Holdout
    version: int | None
    warnings: list[str]


def predict_eval(config_path: str, calibration_end: date, holdout_days: int) -> EvalResult:
    cfg, model = prepare(config_path)
    if holdout_days < 1:
        raise ConfigError(f"--holdout-days must be >= 1, got {holdout_days}")
    return predict_eval_with_deps(open_context(cfg, model), calibration_end, holdout_days)


def predict_eval_with_deps(ctx: Context, day: date, days: int) -> EvalResult:
    """Fit on the valid orders as of `day`, compare with the order days of the `days` after it,
    and record the figures in gold/clv_model (the row of `day`, replaced)."""
    from pyspark.sql import functions as F

    from clm_spark.lifecycle.snapshot import valid_orders_as_of
    from clm_spark.lock import lake_lock
    from clm_spark.predict.clv import (
        ClvParams,
        calibration_stats,
        fit,
        holdout,
        model_rows,
        previous_parameters,
    )
    from clm_spark.quality import validate_frames
    from clm_spark.tables import CLV_MODEL, SILVER_ORDERS

    lake, end = ctx.lake, day + timedelta(days=days)
    if not lake.exists(SILVER_ORDERS):
        raise ClmError("no silver/orders yet: run the pipeline first")
    orders = lake.read(SILVER_ORDERS)
    latest = orders.agg(F.max("order_date")).first()[0]
    if latest is None or latest < end:
        raise ClmError(f"the holdout ends {end}, after the latest order date in silver/orders ({latest})")
    params = ClvParams.of(ctx.cfg.predict)
    stats = calibration_stats(valid_orders_as_of(orders, [day])).persist()
    try:
        fitted = fit(stats, day, params)
        if fitted.purchases is None:
            raise ClmError(f"no model for {day}: {fitted.reason}")
        figures = holdout(stats, fitted, valid_orders_as_of(orders, [end]), days, params)
    finally:
        stats.unpersist()
    row = model_rows(ctx.spark, [fitted], params, previous_parameters(lake, day), {day: figures})
    warnings = []
    if ctx.rules is not None:
        report = validate_frames({CLV_MODEL.name: row}, ctx.rules, checkpoint=False)
        warnings = [f"{w.check.type} {w.check.kwargs.get('column', '')}".strip() for w in report.warnings]
        if report.critical_failures:
            raise ValidationFailed(f"predict-eval {day}: {report.summary()}")
    with lake_lock(
        ctx.cfg.lake.root, "predict-eval", [day], ctx.cfg.lake.lock_wait_seconds, ctx.cfg.lake.lock
    ):
        written = lake.overwrite(
            CLV_MODEL, row, replace={"snapshot_date": [day]}, run_id=f"predict-eval-{day}"
        )
    return EvalResult(fitted, figures, written.version, warnings)


def score_shares(config_path: str, day: date) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """The share of customers per R, F and M score on `day`, computed from silver with the
    configured scoring (nothing is written), and the scoring method of each dimension."""
    from clm_spark.lifecycle.transitions import score_shares as shares_of
    from clm_spark.pipeline import Sources, snapshot_frames, snapshot_params

    cfg, model = prepare(config_path)
    ctx = open_context(cfg, model)
    params = snapshot_params(cfg)
    current = snapshot_frames(Sources.read(ctx.lake), [day], params, model, lambda df: df).snapshot
    methods = {dim: ("thresholds" if dim in params.thresholds else "percentile") for dim in "rfm"}
    return shares_of(current, params.score_bins), methods


EXPORT_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ExportResult:
    out: str
    persons: int  # rows written
    control_left_out: int  # control-group persons of the segment not written
    segment_persons: int  # persons of the segment on the date: persons + control_left_out


def export(
    config_path: str, day: date, segment: str, fmt: str, out: str, include_control: bool
) -> ExportResult:
    cfg, model = prepare(config_path)
    _check_export(model, segment, fmt)
    return export_with_deps(open_context(cfg, model), day, segment, fmt, out, include_control)


def _check_export(model: SegmentModel, segment: str, fmt: str) -> None:
    if segment not in model.ids:
        raise ConfigError(f"--segment: unknown segment {segment!r} (one of {', '.join(model.ids)})")
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format: csv or parquet, got {fmt!r}")


def export_with_deps(
    ctx: Context, day: date, segment: str, fmt: str, out: str, include_control: bool
) -> ExportResult:
    """Write one segment's audience of a published date to `out` (a folder, one file), sorted by
    person; control-group persons stay out unless `include_control` (then they carry the flag).
    Every person of the segment is either written or counted as left out: nothing goes silently."""
    from pyspark.sql import functions as F

    from clm_spark.activation.audiences import segment_audience
    from clm_spark.pipeline import published_dates
    from clm_spark.tables import CUSTOMER_SNAPSHOT

    _check_export(ctx.model, segment, fmt)
    if day not in published_dates(ctx.lake):
        raise ClmError(f"{day} is not published: run `clm run --date {day}` first")
    if ctx.lake.storage.exists(out):
        raise ClmError(f"--out {out} exists already: give a new path")
    snapshot = ctx.lake.read(CUSTOMER_SNAPSHOT).filter(F.col("snapshot_date") == F.lit(day))
    members = snapshot.filter(F.col("segment") == F.lit(segment))
    counts = members.agg(
        F.count(F.lit(1)).alias("persons"),
        F.count(F.when(F.col("is_control"), 1)).alias("control"),
        F.count(F.when(F.col("is_control").isNull(), 1)).alias("unflagged"),
    ).first()
    if counts.unflagged:
        raise ClmError(f"{day} was published before control flags existed: run `clm backfill` for it again")
    rows = segment_audience(snapshot, segment, include_control)
    writer = rows.coalesce(1).write.mode("errorifexists")
    (writer.option("header", True).csv(out) if fmt == "csv" else writer.parquet(out))
    left_out = 0 if include_control else counts.control
    return ExportResult(out, counts.persons - left_out, left_out, counts.persons)
