"""Orchestration of the steps of a run: ingest → refine → snapshot → transitions → validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clm_spark.config import Config
from clm_spark.errors import ValidationFailed
from clm_spark.ingest.bronze import ingest_feed
from clm_spark.ingest.silver import FeedCounts, refine_clickstream, refine_orders
from clm_spark.lake import Lake
from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.lifecycle.snapshot import SnapshotParams, build_people, score_snapshot
from clm_spark.lifecycle.transitions import build_cutpoints, build_matrix, build_summary, build_transitions
from clm_spark.progress import step
from clm_spark.quality import Rules, reconciliation, validate_frames, write_report
from clm_spark.tables import (
    CUSTOMER_SNAPSHOT,
    RFM_CUTPOINTS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
    SILVER_EVENTS,
    SILVER_IDENTITY,
    SILVER_ORDERS,
)

log = logging.getLogger(__name__)


def ingest_and_refine(
    spark: SparkSession, lake: Lake, cfg: Config, run_id: str, run_start: datetime, rules: Rules | None = None
) -> dict[str, FeedCounts]:
    """Ingest new raw files of both feeds into bronze, then refine new bronze batches into silver."""
    for feed, root in (("clickstream", cfg.raw.clickstream), ("orders", cfg.raw.orders)):
        with step(f"ingest {feed}") as s:
            s.rows = ingest_feed(spark, lake, feed, root, run_id, run_start).delivered
    counts = {}
    for feed, refine in (("clickstream", refine_clickstream), ("orders", refine_orders)):
        with step(f"refine {feed}") as s:
            counts[feed] = refine(lake, cfg, run_id, rules)
            s.rows = counts[feed].delivered
    return counts


# --------------------------------------------------------------------------- publishing


@dataclass
class Sources:
    """Silver inputs of the snapshot step, read once (and cached by backfills)."""

    events: DataFrame
    orders: DataFrame
    identity: DataFrame

    @classmethod
    def read(cls, lake: Lake) -> Sources:
        for spec in (SILVER_EVENTS, SILVER_ORDERS, SILVER_IDENTITY):
            lake.create(spec)
        events = lake.read(SILVER_EVENTS).select("event_date", "customer_id", "anonymous_id", "has_email")
        orders = lake.read(SILVER_ORDERS).select(
            "order_id", "customer_id", "order_date", "updated_at", "status", "amount_base"
        )
        identity = lake.read(SILVER_IDENTITY).select("anonymous_id", "customer_id", "event_time")
        return cls(events, orders, identity)

    def cache(self) -> Sources:
        return Sources(
            *(df.persist(StorageLevel.MEMORY_AND_DISK) for df in (self.events, self.orders, self.identity))
        )

    def release(self) -> None:
        for df in (self.events, self.orders, self.identity):
            df.unpersist()


def snapshot_params(cfg: Config) -> SnapshotParams:
    return SnapshotParams(
        lookback_days=cfg.rfm.lookback_days,
        active_days=cfg.visitors.active_days,
        score_bins=cfg.rfm.score_bins,
        percentile=cfg.rfm.percentile,
        approx_relative_error=cfg.rfm.approx_relative_error,
    )


def published_dates(lake: Lake) -> list[date]:
    """Snapshot dates present: those with rows in gold/segment_summary (SPEC §8.13)."""
    if not lake.exists(SEGMENT_SUMMARY):
        return []
    rows = lake.read(SEGMENT_SUMMARY).select("snapshot_date").distinct().collect()
    return sorted(r[0] for r in rows)


def _snapshot_of(lake: Lake, d: date | None) -> DataFrame:
    """The snapshot rows of `d` (none when `d` is None or nothing was published yet)."""
    snapshots = lake.read_or_empty(CUSTOMER_SNAPSHOT)
    return snapshots.filter(F.lit(False) if d is None else F.col("snapshot_date") == F.lit(d))


def _movement(spark, current, previous, d, prev_date, model) -> dict:
    transitions = build_transitions(current, previous, d, prev_date)
    return {
        SEGMENT_TRANSITIONS: transitions,
        SEGMENT_TRANSITION_MATRIX: build_matrix(current, previous, d),
        SEGMENT_SUMMARY: build_summary(spark, current, transitions, d, model),
    }


@dataclass
class Published:
    versions: dict[str, int | None]
    validation: str


def _gate(lake: Lake, rules: Rules, run_id: str, d: date, frames: dict[str, DataFrame]) -> str:
    """Validate before anything of D is written; a critical failure publishes nothing."""
    report = validate_frames(frames, rules)
    path = write_report(lake.root, run_id, f"validation-{d}", report)
    summary = f"{d} {report.summary()}"
    if report.critical_failures:
        raise ValidationFailed(f"{summary} (report: {path})")
    for warning in report.warnings:
        log.warning("validation warning on %s: %s %s", d, warning.check.table, warning.check.type)
    log.info("validation %s; report %s", summary, path)
    return f"{summary} (report: {path})"


def publish_date(
    spark: SparkSession,
    lake: Lake,
    cfg: Config,
    model: SegmentModel,
    d: date,
    run_id: str,
    sources: Sources,
    rules: Rules | None = None,
    tamper=None,
) -> Published:
    """Compute, validate and publish every gold table for D; recompute the next later date's movement.

    Each table's D partition is replaced atomically; gold/segment_summary is written last, so a
    date counts as present only once everything else of it is in place. `tamper` (tests only)
    may alter the computed outputs to prove the quality gate holds.
    """
    params = snapshot_params(cfg)
    kept: list[DataFrame] = []
    try:
        with step(f"snapshot {d}") as s:
            # the percentiles read the people three times: scan silver once
            people = build_people(sources.events, sources.orders, sources.identity, d, params)
            kept.append(people.persist(StorageLevel.MEMORY_AND_DISK))
            current = score_snapshot(people, d, params, model).persist(StorageLevel.MEMORY_AND_DISK)
            kept.append(current)
            s.rows = current.count()
        dates = [x for x in published_dates(lake) if x != d]
        prev_date = max((x for x in dates if x < d), default=None)
        next_date = min((x for x in dates if x > d), default=None)
        previous = _snapshot_of(lake, prev_date).persist(StorageLevel.MEMORY_AND_DISK)
        kept.append(previous)
        outputs = {
            CUSTOMER_SNAPSHOT: current,
            RFM_CUTPOINTS: build_cutpoints(current, d, params.score_bins),
            **_movement(spark, current, previous, d, prev_date, model),
        }
        if tamper is not None:
            outputs = tamper(outputs)
        # validation and the writes read every output again: compute each one once
        outputs = {spec: df.persist(StorageLevel.MEMORY_AND_DISK) for spec, df in outputs.items()}
        kept.extend(outputs.values())
        validation = "not run (validation.enabled is false)"
        if rules is not None:
            has_input = sources.events.limit(1).count() + sources.orders.limit(1).count()
            frames = {spec.name: df for spec, df in outputs.items()}
            frames["checks/reconciliation"] = reconciliation(
                outputs[CUSTOMER_SNAPSHOT],
                outputs[SEGMENT_SUMMARY],
                outputs[SEGMENT_TRANSITION_MATRIX],
                previous,
                has_input,
            )
            with step(f"validate {d}"):
                validation = _gate(lake, rules, run_id, d, frames)
        versions = {}
        with step(f"write {d}"):
            for spec, df in outputs.items():  # dict order: snapshot first, summary last
                versions[spec.name] = lake.overwrite(
                    spec, df, replace={"snapshot_date": [d]}, run_id=run_id
                ).version
        if next_date is not None:
            nxt = _snapshot_of(lake, next_date).persist(StorageLevel.MEMORY_AND_DISK)
            kept.append(nxt)
            movement = _movement(spark, nxt, current, next_date, d, model)
            transitions = movement[SEGMENT_TRANSITIONS].persist(StorageLevel.MEMORY_AND_DISK)
            kept.append(transitions)  # the summary reads it too
            for spec, df in movement.items():
                versions[spec.name] = lake.overwrite(
                    spec, df, replace={"snapshot_date": [next_date]}, run_id=run_id
                ).version
        degenerate = sorted(
            r.dimension
            for r in outputs[RFM_CUTPOINTS].filter("is_degenerate").select("dimension").distinct().collect()
        )  # at most 3 rows: the cut-points table has <= 3 x B rows
        if degenerate:
            log.warning(
                "%s: RFM dimension(s) %s have fewer distinct scores than bins (ties)",
                d,
                ", ".join(degenerate),
            )
        log.info("published %s (previous %s, next %s)", d, prev_date, next_date)
        return Published(versions, validation)
    finally:
        for df in kept:
            df.unpersist()
