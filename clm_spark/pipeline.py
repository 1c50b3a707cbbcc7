"""Orchestration of the steps of a run: ingest → refine → snapshot → transitions → validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clm_spark.activation.audiences import CONTACT, audience_changes, audience_current, segment_catalog
from clm_spark.config import Config
from clm_spark.errors import ValidationFailed
from clm_spark.ingest.bronze import ingest_feed
from clm_spark.ingest.silver import FeedCounts, refine_clickstream, refine_orders, refined_batch
from clm_spark.lake import Lake, TableSpec
from clm_spark.lifecycle.kpis import (
    ORDER_FACTS,
    build_cohorts,
    build_kpis,
    cohort_months_to_write,
    customer_facts,
    kpi_customers,
    order_facts,
)
from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.lifecycle.snapshot import (
    CarriedState,
    SnapshotParams,
    as_dates,
    carried_state,
    identity_links,
    pair_activity,
    people_of,
    score_snapshot,
    valid_orders_as_of,
)
from clm_spark.lifecycle.transitions import (
    build_cutpoints,
    build_matrix,
    build_summary,
    build_transitions,
    segment_pairs,
)
from clm_spark.progress import step
from clm_spark.quality import Rules, reconciliation, validate_frames
from clm_spark.reports.validation import write_validation_report
from clm_spark.tables import (
    AUDIENCE_CHANGES,
    AUDIENCE_CURRENT,
    CLV_MODEL,
    COHORT_RETENTION,
    CUSTOMER_PREDICTIONS,
    CUSTOMER_SNAPSHOT,
    LIFECYCLE_KPIS,
    RFM_CUTPOINTS,
    SEGMENT_CATALOG,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
    SILVER_ACTIVITY_STATE,
    SILVER_EVENTS,
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
    """Silver inputs of the snapshot step, and the activity state carried from earlier runs."""

    events: DataFrame
    orders: DataFrame
    state: CarriedState | None = None  # None: absent, empty, or of other events (not used)
    state_dates: tuple[date, ...] = ()  # covered_before of every state partition found (replaced on write)
    events_batch: int = 0  # last clickstream batch in silver/events
    events_table_id: str | None = None

    @classmethod
    def read(cls, lake: Lake, state_version: int | None = None) -> Sources:
        """The current silver tables; the activity state as of `state_version` (default: current)."""
        for spec in (SILVER_EVENTS, SILVER_ORDERS):
            lake.create(spec)
        # the identity links are the events carrying both ids: the snapshot finds them there
        events = lake.read(SILVER_EVENTS).select(
            "event_date", "event_time", "customer_id", "anonymous_id", "has_email", "_batch_id"
        )
        orders = lake.read(SILVER_ORDERS).select(
            "order_id", "customer_id", "order_date", "updated_at", "status", "amount_base"
        )
        batch = refined_batch(lake, SILVER_EVENTS, "clickstream")
        table_id = lake.table_id(SILVER_EVENTS)
        if not lake.exists(SILVER_ACTIVITY_STATE):
            return cls(events, orders, None, (), batch, table_id)
        rows = lake.read(SILVER_ACTIVITY_STATE, state_version)
        # one partition per state (a few rows of partition values, never customer rows)
        found = rows.select(*SILVER_ACTIVITY_STATE.partition_by).distinct().collect()
        state = None
        if len(found) == 1 and found[0].events_table_id == table_id and found[0].covered_batch <= batch:
            state = CarriedState(rows, found[0].covered_before, found[0].covered_batch)
        elif found:
            log.warning("silver/activity_state does not match silver/events: not used, rebuilt by this run")
        return cls(events, orders, state, tuple(sorted({r.covered_before for r in found})), batch, table_id)


def carry_state(lake: Lake, sources: Sources, pairs: DataFrame, dates: list[date], run_id: str) -> int | None:
    """Replace silver/activity_state with the events up to the last date (never moved back); its version.

    `pairs` (from `pair_activity` over `sources` for `dates`) summarises every event dated up to
    dates[-1] of the batches read, so the next run reads only events after that day or of later
    batches.
    """
    before = dates[-1] + timedelta(days=1)
    if sources.state is not None and sources.state.before > before:
        return None  # a later date already carried it further
    rows = carried_state(pairs, dates).select(
        "*",
        F.lit(before).alias("covered_before"),
        F.lit(sources.events_batch).cast("long").alias("covered_batch"),
        F.lit(sources.events_table_id).cast("string").alias("events_table_id"),
    )
    replace = {"covered_before": sorted({*sources.state_dates, before})}
    return lake.overwrite(SILVER_ACTIVITY_STATE, rows, replace=replace, run_id=run_id).version


class SnapshotFrames(NamedTuple):
    pairs: DataFrame  # per visitor-id pair activity: the next carried state
    valid_orders: DataFrame  # the valid orders as of each date: the cohorts and predictions read them
    snapshot: DataFrame  # the scored snapshot rows of the dates
    customers: DataFrame  # each customer's segment and order facts: the KPIs read them
    state: CarriedState | None  # the carried state used, if any


def snapshot_frames(
    sources: Sources, dates: list[date], params: SnapshotParams, model: SegmentModel, keep
) -> SnapshotFrames:
    """The scored snapshot of the dates and what it was built from, each passed through `keep`
    (which persists it). The snapshot and the KPIs' customers are columns of one kept frame: the
    scored rows carry each customer's order facts, computed with its RFM metrics."""
    # the state serves the dates when none of them is before the last day it covers
    state = sources.state if sources.state is not None and sources.state.serves(dates) else None
    pairs = keep(pair_activity(sources.events, dates, state))
    valid = keep(valid_orders_as_of(sources.orders, dates))
    # the percentiles read the people three times: scan silver once
    people = keep(people_of(pairs, valid, dates, params, order_facts()))
    scored = keep(score_snapshot(people, params, model, carry=ORDER_FACTS))
    snapshot = scored.select(*CUSTOMER_SNAPSHOT.columns)
    return SnapshotFrames(pairs, valid, snapshot, kpi_customers(scored), state)


def snapshot_params(cfg: Config) -> SnapshotParams:
    return SnapshotParams(
        lookback_days=cfg.rfm.lookback_days,
        active_days=cfg.visitors.active_days,
        score_bins=cfg.rfm.score_bins,
        percentile=cfg.rfm.percentile,
        approx_relative_error=cfg.rfm.approx_relative_error,
        thresholds=cfg.rfm.thresholds(),
        control_share=cfg.activation.control_share,
        control_salt=cfg.activation.control_salt,
    )


def published_dates(lake: Lake) -> list[date]:
    """Snapshot dates present: those with rows in gold/segment_summary (SPEC §8.13)."""
    return sorted(_dates_in(lake, SEGMENT_SUMMARY))


def _snapshots_of(lake: Lake, dates: list[date]) -> DataFrame:
    """The published snapshot rows of `dates` (none when the list is empty)."""
    snapshots = lake.read_or_empty(CUSTOMER_SNAPSHOT)
    return snapshots.filter(F.col("snapshot_date").isin(*dates) if dates else F.lit(False))


@dataclass(frozen=True)
class KpiInputs:
    """What the KPIs need beyond the snapshots: each customer's order facts and the identity links."""

    customers: DataFrame  # `kpis.kpi_customers` or `kpis.customer_facts`
    links: DataFrame
    retention_days: int


def _movement(spark, current, previous, prev_of, model, keep, kpi: KpiInputs) -> tuple[DataFrame, dict]:
    """The tables of each date that depend on its previous snapshot (the summary last), and the
    full join of the two snapshots they are made from."""
    pairs = keep(segment_pairs(current, previous, prev_of, carry=CONTACT))  # four tables and the gate
    transitions = build_transitions(pairs)
    matrix = keep(build_matrix(pairs))  # the KPIs read it
    kpis = build_kpis(
        spark, current, previous, prev_of, matrix, kpi.customers, kpi.links, model, kpi.retention_days
    )
    return pairs, {
        SEGMENT_TRANSITIONS: transitions,
        SEGMENT_TRANSITION_MATRIX: matrix,
        AUDIENCE_CHANGES: audience_changes(pairs),
        LIFECYCLE_KPIS: kpis,
        SEGMENT_SUMMARY: build_summary(spark, current, transitions, sorted(prev_of), model),
    }


@dataclass
class Published:
    versions: dict[str, int | None]
    validation: str


@dataclass
class Computed:
    """The gold outputs of some dates and what they were computed from (nothing written yet)."""

    dates: list[date]
    outputs: dict[TableSpec, DataFrame]  # snapshot first, summary last: the order of the writes
    previous: DataFrame  # the previous snapshot rows of each date
    prev_of: dict[date, date | None]
    others: list[date]  # published dates not among `dates`
    pairs: DataFrame  # per visitor-id pair activity: the next carried state
    segment_pairs: DataFrame  # each person on the previous snapshot and on the date (full join)
    state_used: bool
    replace: dict[TableSpec, dict] = field(default_factory=dict)  # partitions replaced, when not the dates'


def _label(dates: list[date]) -> str:
    return str(dates[0]) if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"


def _previous_of(dates: list[date], others: list[date]) -> dict[date, date | None]:
    """Each date's previous snapshot among all of `dates` and `others` (None on the first)."""
    every = sorted({*dates, *others})
    return {d: max((x for x in every if x < d), default=None) for d in dates}


class _Kept:
    """Frames persisted for the length of one publish (validation and writes read them again)."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        self.frames.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return df

    def holds(self, df: DataFrame) -> bool:
        return any(df is kept for kept in self.frames)

    def release(self, but: DataFrame | None = None) -> None:
        """Unpersist every frame (but `but`, kept for a later release)."""
        # the latest first: uncaching a frame re-plans every cached frame built on it that has
        # not been computed, so the frames built on another go before it
        for df in reversed(self.frames):
            if df is not but:
                df.unpersist()
        self.frames = [df for df in self.frames if df is but]


def compute_outputs(
    spark: SparkSession,
    lake: Lake,
    cfg: Config,
    model: SegmentModel,
    dates: list[date],
    sources: Sources,
    keep=lambda df: df,
) -> Computed:
    """Step 1: every gold output of the dates, from silver and the published previous snapshots."""
    params = snapshot_params(cfg)
    with step(f"snapshot {_label(dates)}") as s:
        pairs, valid, current, customers, state = snapshot_frames(sources, dates, params, model, keep)
        s.rows = current.count()
    others = [x for x in published_dates(lake) if x not in dates]
    prev_of = _previous_of(dates, others)
    stored = sorted({p for p in prev_of.values() if p is not None and p not in dates})
    ours = sorted({p for p in prev_of.values() if p in dates})
    previous = keep(_snapshots_of(lake, stored)).unionByName(
        current.filter(F.col("snapshot_date").isin(*ours) if ours else F.lit(False))
    )
    kpi = KpiInputs(customers, identity_links(pairs, dates), cfg.kpis.retention_days)
    moved, movement = _movement(spark, current, previous, prev_of, model, keep, kpi)
    outputs = {
        CUSTOMER_SNAPSHOT: current,
        RFM_CUTPOINTS: build_cutpoints(current, params.score_bins),
        **movement,
    }
    replace = {}
    publishes_latest = not others or dates[-1] > others[-1]
    if publishes_latest:  # the audience moves on
        latest = current.filter(F.col("snapshot_date") == F.lit(dates[-1]))
        outputs[AUDIENCE_CURRENT] = audience_current(latest)
        # every row goes: the dates in the table, whatever they are, and ours
        replace[AUDIENCE_CURRENT] = {"snapshot_date": sorted({*dates, *_dates_in(lake, AUDIENCE_CURRENT)})}
    stored = _cohort_months_in(lake)
    first = min(stored) if stored else sources.orders.agg(F.min("order_date")).first()[0]
    months = cohort_months_to_write(max([*dates, *others]), publishes_latest, stored, first)
    if months:  # the open month as of the latest date; ended months once, as of their last day
        as_of = sorted(set(months.values()))
        orders = valid if set(as_of) <= set(dates) else valid_orders_as_of(sources.orders, as_of)
        outputs[COHORT_RETENTION] = build_cohorts(orders, months)
        replace[COHORT_RETENTION] = {"activity_month": sorted(months)}
    if not _catalogued(lake, model.version):
        outputs[SEGMENT_CATALOG] = segment_catalog(spark, model)
        replace[SEGMENT_CATALOG] = {"rules_version": [model.version]}
    if cfg.predict.enabled:  # scipy is imported only when the models are wanted
        from clm_spark.predict.clv import ClvParams, clv_outputs, previous_parameters

        with step(f"predict {_label(dates)}"):
            before = previous_parameters(lake, dates[0])
            predicted, fitted = clv_outputs(valid, dates, ClvParams.of(cfg.predict), keep, before)
        outputs |= {CUSTOMER_PREDICTIONS: predicted, CLV_MODEL: fitted}
    outputs[SEGMENT_SUMMARY] = outputs.pop(SEGMENT_SUMMARY)  # the summary stays the last write of a date
    return Computed(dates, outputs, previous, prev_of, others, pairs, moved, state is not None, replace)


def _dates_in(lake: Lake, spec: TableSpec) -> list[date]:
    """The snapshot dates with rows in a table (one row per date reaches the driver)."""
    if not lake.exists(spec):
        return []
    return [r[0] for r in lake.read(spec).select("snapshot_date").distinct().collect()]


def _cohort_months_in(lake: Lake) -> dict[date, date]:
    """Activity month -> the as-of date it was computed at (one row per month reaches the driver)."""
    if not lake.exists(COHORT_RETENTION):
        return {}
    rows = lake.read(COHORT_RETENTION).groupBy("activity_month").agg(F.max("as_of_date")).collect()
    return {r[0]: r[1] for r in rows}


def _catalogued(lake: Lake, version: str) -> bool:
    """The rules of this version are in gold/segment_catalog already (a few rows per version)."""
    if not lake.exists(SEGMENT_CATALOG):
        return False
    return lake.read(SEGMENT_CATALOG).filter(F.col("rules_version") == F.lit(version)).limit(1).count() > 0


def gate_outputs(lake: Lake, rules: Rules | None, run_id: str, computed: Computed, sources: Sources) -> str:
    """Step 2: validate every output before anything of the dates is written (critical = raise)."""
    if rules is None:
        return "not run (validation.enabled is false)"
    outputs, dates = computed.outputs, computed.dates
    has_input = sources.events.limit(1).count() + sources.orders.limit(1).count()
    frames = {spec.name: df for spec, df in outputs.items()}
    frames["checks/reconciliation"] = reconciliation(
        frames, computed.previous, computed.prev_of, computed.segment_pairs, has_input
    )  # validate_frames checkpoints each frame once before GX reads it
    with step(f"validate {_label(dates)}"):
        report = validate_frames(frames, rules)
        path = write_validation_report(lake.storage, lake.root, run_id, f"validation-{_label(dates)}", report)
    summary = f"{_label(dates)} {report.summary()}"
    if report.critical_failures:
        raise ValidationFailed(f"{summary} (report: {path})")
    for warning in report.warnings:
        log.warning("validation warning on %s: %s %s", _label(dates), warning.check.table, warning.check.type)
    log.info("validation %s; report %s", summary, path)
    return f"{summary} (report: {path})"


def write_outputs(lake: Lake, computed: Computed, run_id: str) -> dict[str, int | None]:
    """Step 3: replace the dates' partitions of each table, one commit each, the summary last."""
    versions = {}
    with step(f"write {_label(computed.dates)}"):
        for spec, df in computed.outputs.items():
            replace = computed.replace.get(spec, {"snapshot_date": computed.dates})
            versions[spec.name] = lake.overwrite(spec, df, replace=replace, run_id=run_id).version
    return versions


def recompute_following(
    spark: SparkSession,
    lake: Lake,
    cfg: Config,
    model: SegmentModel,
    computed: Computed,
    sources: Sources,
    run_id: str,
    keep,
) -> dict[str, int | None]:
    """Step 4: published dates right after one of ours get their movement from our snapshot."""
    later = {x: p for x, p in _previous_of(computed.others, computed.dates).items() if p in computed.dates}
    if not later:
        return {}
    nxt = keep(_snapshots_of(lake, sorted(later)))
    # their conversions need their own orders and links: read from silver (out-of-order runs only)
    dates = sorted(later)
    pairs = pair_activity(sources.events, dates)
    customers = customer_facts(nxt, valid_orders_as_of(sources.orders, dates))
    kpi = KpiInputs(customers, identity_links(pairs, dates), cfg.kpis.retention_days)
    _, movement = _movement(spark, nxt, computed.outputs[CUSTOMER_SNAPSHOT], later, model, keep, kpi)
    return {
        spec.name: lake.overwrite(spec, df, replace={"snapshot_date": sorted(later)}, run_id=run_id).version
        for spec, df in movement.items()
    }


def _warn_degenerate(cutpoints: DataFrame) -> None:
    degenerate = sorted(
        f"{r.snapshot_date} {r.dimension}"
        for r in cutpoints.filter("is_degenerate").select("snapshot_date", "dimension").distinct().collect()
    )  # at most 3 rows per date: the cut-points table has <= 3 x B rows per date
    if degenerate:
        log.warning("RFM dimension(s) with fewer distinct scores than bins (ties): %s", ", ".join(degenerate))


def publish_dates(
    spark: SparkSession,
    lake: Lake,
    cfg: Config,
    model: SegmentModel,
    when: date | list[date],
    run_id: str,
    sources: Sources,
    rules: Rules | None = None,
) -> Published:
    """Compute, gate and write every gold table for the dates; recompute the following date; carry the state.

    All dates are computed in one pass over silver, validated together and written in one commit
    per table: each table's partitions of those dates are replaced atomically, and
    gold/segment_summary is written last, so a date counts as present only once everything else of
    it is in place.
    """
    dates = as_dates(when)
    keep = _Kept()
    try:
        computed = compute_outputs(spark, lake, cfg, model, dates, sources, keep)
        # validation and the writes read every output again: compute each one once (the snapshot
        # is read from the kept scored rows it selects from)
        computed.outputs = {
            s: df if keep.holds(df) or s == CUSTOMER_SNAPSHOT else keep(df)
            for s, df in computed.outputs.items()
        }
        validation = gate_outputs(lake, rules, run_id, computed, sources)
        versions = write_outputs(lake, computed, run_id)
        versions.update(recompute_following(spark, lake, cfg, model, computed, sources, run_id, keep))
        _warn_degenerate(computed.outputs[RFM_CUTPOINTS])
        # Spark re-plans every cached frame that reads a table after a save to it (delta-spark:
        # one Delta file listing per scan in those plans), and most kept frames read the state
        # through the pairs: only the pairs, which the state write reads, stay cached for it
        keep.release(but=computed.pairs)
        carried = carry_state(lake, sources, computed.pairs, dates, run_id)
        if carried is not None:
            versions[SILVER_ACTIVITY_STATE.name] = carried
        log.info(
            "published %s (previous %s; activity state %s)",
            _label(dates),
            computed.prev_of[dates[0]],
            "used" if computed.state_used else "not used",
        )
        return Published(versions, validation)
    finally:
        keep.release()
