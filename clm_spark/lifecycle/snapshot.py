"""gold/customer_snapshot for one or more dates (SPEC §4, §8): population, RFM metrics, scores, segments.

Every function takes the snapshot dates at once: a backfill computes all its dates in one pass
over silver instead of one pass per date. A row of silver (an event, a link, an order version)
is first tagged with the first snapshot date that sees it, reduced at that grain, then fanned out
to every later snapshot date it stays visible in (`_each_date_from`).

Events are first reduced to one row per (anonymous_id, customer_id) pair. That summary is what
the pipeline carries from one run to the next (silver/activity_state, `CarriedState`): a daily
run merges it with the events it does not cover (newer days, late arrivals) instead of reading
every event again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clm_spark.activation.control import bucket_column, control_columns
from clm_spark.lifecycle.percentiles import with_percentiles
from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import CUSTOMER_SNAPSHOT, MONEY

VALID_STATUSES = ("placed", "completed")
Dates = date | Sequence[date]


@dataclass(frozen=True)
class SnapshotParams:
    lookback_days: int = 365
    active_days: int = 90
    score_bins: int = 5
    percentile: str | Callable = "exact"  # exact | approx, or a function (rows, keys, by) -> ranked rows
    approx_relative_error: float = 0.001
    # dimensions scored by configured bounds instead of percentiles: {"f": (2, 3, 4, 6)}, B - 1 each
    thresholds: Mapping[str, tuple] = field(default_factory=dict)
    control_share: float = 0.05  # the global control group (activation.*)
    control_salt: str = "clm"


def as_dates(when: Dates) -> list[date]:
    """One date or several, as a sorted list without repeats."""
    dates = sorted({when} if isinstance(when, date) else set(when))
    if not dates:
        raise ValueError("no snapshot date given")
    return dates


def _until_end_of(d: date) -> Column:
    """`ts` up to the end of UTC day D, as a plain timestamp bound Parquet can skip row groups with."""
    return F.lit(d + timedelta(days=1)).cast("timestamp")


def _first_date_seeing(dates: list[date], sees: Callable[[date], Column]) -> Column:
    """The first snapshot date whose view includes the row (null when none does)."""
    first = F.when(sees(dates[0]), F.lit(dates[0]))
    for d in dates[1:]:
        first = first.when(sees(d), F.lit(d))
    return first


def _each_date_from(first: Column, dates: list[date], until: Column | None = None) -> Column:
    """One row per snapshot date in [first, until): what a row seen from `first` on is part of.

    With one date every row that reaches here is seen by it (callers drop later rows first), so
    `first` is that date: kept as a column rather than a literal, because the optimizer folds a
    literal out of join keys but not out of grouping keys, and the joins would shuffle again.
    """
    if len(dates) == 1:
        return first
    if until is None:
        seen = lambda x: x >= first  # noqa: E731
    else:
        seen = lambda x: (x >= first) & (until.isNull() | (x < until))  # noqa: E731
    return F.explode(F.filter(F.array(*[F.lit(d) for d in dates]), seen))


PAIR_FACTS = ("first_event_date", "last_event_date", "has_email", "last_seen")


@dataclass(frozen=True)
class CarriedState:
    """silver/activity_state as read: per (anonymous_id, customer_id) pair, a summary of every
    event dated before `before` whose ingest batch is at most `batch`."""

    rows: DataFrame
    before: date
    batch: int

    def serves(self, dates: list[date]) -> bool:
        """True when every snapshot date sees all the events summarised (none dated after dates[0])."""
        return self.before <= dates[0] + timedelta(days=1)


def _merged() -> list[Column]:
    """Pair summaries merged: min and max are associative and idempotent (or is max of booleans)."""
    return [
        F.min("first_event_date").alias("first_event_date"),
        F.max("last_event_date").alias("last_event_date"),
        F.max("has_email").alias("has_email"),
        F.max("last_seen").alias("last_seen"),
    ]


def _event_pairs(events: DataFrame) -> DataFrame:
    """Each event as the summary of its own pair: its date as first and last date."""
    return events.select(
        "anonymous_id",
        "customer_id",
        F.col("event_date").alias("first_event_date"),
        F.col("event_date").alias("last_event_date"),
        F.coalesce("has_email", F.lit(False)).alias("has_email"),
        F.col("event_time").alias("last_seen"),
    )


def pair_activity(events: DataFrame, when: Dates, state: CarriedState | None = None) -> DataFrame:
    """Per (anonymous_id, customer_id, first snapshot date seeing it): min/max event date, email, last time.

    Min, max and or are associative and idempotent, so a pair's summary can be merged with more
    of its events, and an event counted twice changes nothing. With a carried `state` (it must
    serve the dates) only the events it does not summarise are read: those dated from
    `state.before` on and those of later ingest batches (late arrivals); the state's rows are seen
    by every date. `events` then needs `_batch_id`.
    """
    dates = as_dates(when)
    rows = events
    if state is not None:
        if not state.serves(dates):
            raise ValueError(f"the activity state covers events dated before {state.before}: not {dates[0]}")
        newer = (F.col("event_date") >= F.lit(state.before)) | (F.col("_batch_id") > F.lit(state.batch))
        rows = events.filter(newer)
    pairs = _event_pairs(rows.filter(F.col("event_date") <= F.lit(dates[-1])))
    if state is not None:
        pairs = pairs.unionByName(state.rows.select("anonymous_id", "customer_id", *PAIR_FACTS))
    first = _first_date_seeing(dates, lambda d: F.col("last_event_date") <= F.lit(d))
    return pairs.groupBy("anonymous_id", "customer_id", first.alias("_from")).agg(*_merged())


def carried_state(pairs: DataFrame, when: Dates) -> DataFrame:
    """The pairs of `pair_activity` merged over the dates: every event dated up to the last date."""
    if len(as_dates(when)) == 1:  # one date: one row per pair already
        return pairs.select("anonymous_id", "customer_id", *PAIR_FACTS)
    return pairs.groupBy("anonymous_id", "customer_id").agg(*_merged())


def person_activity(pairs: DataFrame, when: Dates, salt: str = "clm") -> DataFrame:
    """Per snapshot date and person: first/last event date, has_email, known customer id (SPEC §8.9–8.12).

    `pairs` comes from `pair_activity`: events reduced to one row per (anonymous_id, customer_id,
    first date seeing them), then fanned out to each date. The identity links are the pairs
    carrying both ids (what silver/identity holds, summarised): the latest such pair of a visitor
    up to D, ties to the larger id, maps it. A window over the visitor's rows finds it, so neither
    the 22M links nor a join is needed. An event's own customer_id wins. The control-group buckets
    (`salt`) of the visitor keys merged into a customer are kept as their min and max.
    """
    dates = as_dates(when)
    facts = ["first_event_date", "last_event_date", "has_email"]
    per_date = pairs.select(
        _each_date_from(F.col("_from"), dates).alias("snapshot_date"),
        "anonymous_id",
        "customer_id",
        *facts,
        "last_seen",
    )
    is_link = F.col("anonymous_id").isNotNull() & F.col("customer_id").isNotNull()
    # rows without a visitor id need no mapping: give each its own window partition (no skew)
    visitor = F.coalesce("anonymous_id", F.concat(F.lit("customer:"), F.col("customer_id")))
    visitor_rows = Window.partitionBy("snapshot_date", visitor).rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    latest_link = F.max(F.when(is_link, F.struct("last_seen", "customer_id"))).over(visitor_rows)
    known = F.coalesce("customer_id", latest_link.getField("customer_id"))
    mapped = per_date.select("snapshot_date", "anonymous_id", known.alias("known_customer_id"), *facts)
    visitor_key = F.concat(F.lit("anon:"), F.col("anonymous_id"))
    person = F.coalesce("known_customer_id", visitor_key)
    # a visitor key merged into a customer: hashed only for those rows (the rest are the person's own)
    merged = F.when(F.col("known_customer_id").isNotNull(), bucket_column(salt, visitor_key))
    return (
        mapped.select(
            "snapshot_date", person.alias("person_id"), "known_customer_id", *facts, merged.alias("_linked")
        )
        .groupBy("snapshot_date", "person_id")
        .agg(
            F.min("first_event_date").alias("first_event_date"),
            F.max("last_event_date").alias("last_event_date"),
            F.max("has_email").alias("ev_has_email"),
            F.max("known_customer_id").alias("known_customer_id"),
            F.min("_linked").alias("linked_bucket_min"),
            F.max("_linked").alias("linked_bucket_max"),
        )
    )


def identity_links(pairs: DataFrame, when: Dates) -> DataFrame:
    """(snapshot_date, anonymous_id, customer_id): the customer each linked anonymous id maps to on
    each date, by the rule of `person_activity` (its latest link up to D, ties to the larger id)."""
    dates = as_dates(when)
    links = pairs.filter(F.col("anonymous_id").isNotNull() & F.col("customer_id").isNotNull())
    per_date = links.select(
        _each_date_from(F.col("_from"), dates).alias("snapshot_date"),
        "anonymous_id",
        F.struct("last_seen", "customer_id").alias("link"),
    )
    return per_date.groupBy("snapshot_date", "anonymous_id").agg(
        F.max("link").getField("customer_id").alias("customer_id")
    )


def valid_orders_as_of(orders: DataFrame, when: Dates) -> DataFrame:
    """Per snapshot date D: the latest version of each order recorded up to D, if placed/completed and dated ≤ D.

    One window over each order's versions in time order: a version is the order's state from the
    first date seeing it until the first date seeing the next one, and is dropped when that is the
    same date. One shuffle and one sort (an aggregation keeping the latest version as a struct with
    strings cannot be hashed: Spark sorts for it twice). Silver holds one row per (order_id,
    updated_at); the other columns only break ties deterministically should it not.
    """
    dates = as_dates(when)
    recorded = orders.filter(F.col("updated_at") < _until_end_of(dates[-1]))
    first = _first_date_seeing(dates, lambda d: F.col("updated_at") < _until_end_of(d))
    in_time = Window.partitionBy("order_id").orderBy(
        "updated_at", "customer_id", "order_date", "status", "amount_base"
    )
    versions = recorded.withColumn("_from", first).withColumn("_until", F.lead("_from").over(in_time))
    latest = versions.filter(F.col("_until").isNull() | (F.col("_until") != F.col("_from")))
    per_date = latest.select(
        "customer_id",
        "order_date",
        "status",
        "amount_base",
        _each_date_from(F.col("_from"), dates, F.col("_until")).alias("snapshot_date"),
    )
    return per_date.filter(
        F.col("status").isin(*VALID_STATUSES) & (F.col("order_date") <= F.col("snapshot_date"))
    )


def customer_metrics(
    valid_orders: DataFrame, lookback_days: int, extra: Mapping[str, Column] | None = None
) -> DataFrame:
    """Per date and customer: the RFM metrics, and the `extra` aggregates of its valid orders."""
    in_window = F.col("order_date") > F.date_sub(F.col("snapshot_date"), lookback_days)
    return valid_orders.groupBy("snapshot_date", F.col("customer_id").alias("person_id")).agg(
        F.count(F.lit(1)).cast("int").alias("orders_lifetime"),
        F.min("order_date").alias("first_order_date"),
        F.max("order_date").alias("last_order_date"),
        F.count(F.when(in_window, 1)).cast("int").alias("frequency"),
        F.coalesce(F.sum(F.when(in_window, F.col("amount_base"))), F.lit(0)).cast(MONEY).alias("monetary"),
        *[column.alias(name) for name, column in (extra or {}).items()],
    )


def _score(pct: str, bins: int) -> Column:
    return F.when(
        F.col(pct).isNotNull(), F.least(F.lit(bins), (F.floor(F.col(pct) * F.lit(bins)) + 1).cast("int"))
    ).cast("int")


_METRIC = {"r": "recency_days", "f": "frequency", "m": "monetary"}


def _threshold_score(dim: str, bounds: tuple, bins: int) -> Column:
    """Configured bounds: f and m score 1 + the bounds the value reaches; r (recency, smaller is
    better) scores B − the bounds recency_days reaches. Visitors keep null."""
    metric = F.col(_METRIC[dim])
    reached = sum((F.when(metric >= F.lit(b), 1).otherwise(0) for b in bounds), F.lit(0))
    score = F.lit(bins) - reached if dim == "r" else F.lit(1) + reached
    return F.when(F.col("is_customer"), score).cast("int")


def with_rfm_scores(people: DataFrame, params: SnapshotParams) -> DataFrame:
    """Percentiles and scores for customers, ranked within their snapshot date; visitors keep nulls."""
    customer = F.col("is_customer")  # visitors get null keys: not ranked, not counted
    keyed = people.select(
        "*",
        F.when(customer, -F.col("recency_days")).alias("_r_key"),
        F.when(customer, F.col("frequency")).alias("_f_key"),
        F.when(customer, F.col("monetary")).alias("_m_key"),
    )
    keys = {f"_{dim}_key": f"{dim}_percentile" for dim in "rfm"}
    out = with_percentiles(keyed, keys, params.percentile, params.approx_relative_error, by="snapshot_date")
    out = out.drop(*keys)
    b = params.score_bins
    out = out.select(
        "*",
        *[
            _threshold_score(dim, params.thresholds[dim], b).alias(f"{dim}_score")
            if dim in params.thresholds
            else _score(f"{dim}_percentile", b).alias(f"{dim}_score")
            for dim in "rfm"
        ],
    )
    return out.withColumn(
        "rfm_cell", F.when(F.col("is_customer"), F.concat_ws("", "r_score", "f_score", "m_score"))
    )


def build_people(
    events: DataFrame,
    orders: DataFrame,
    when: Dates,
    params: SnapshotParams,
    state: CarriedState | None = None,
) -> DataFrame:
    """The population of each snapshot date with its RFM metrics, before scoring (one row per date and person)."""
    return people_of(pair_activity(events, when, state), valid_orders_as_of(orders, when), when, params)


def people_of(
    pairs: DataFrame,
    valid_orders: DataFrame,
    when: Dates,
    params: SnapshotParams,
    extra: Mapping[str, Column] | None = None,
) -> DataFrame:
    """`build_people` from the visitor pairs of `pair_activity` and the valid orders of
    `valid_orders_as_of` (the pipeline keeps both: the state, the cohorts and the predictions read
    them again).

    `extra` aggregates of each customer's valid orders come along as columns of those names (null
    for visitors), computed in the same pass as the RFM metrics."""
    dates = as_dates(when)
    activity = person_activity(pairs, dates, params.control_salt)
    metrics = customer_metrics(valid_orders, params.lookback_days, extra)
    people = metrics.join(activity, ["snapshot_date", "person_id"], how="full")
    is_customer = F.col("orders_lifetime").isNotNull()
    is_active = F.col("last_event_date") > F.date_sub(F.col("snapshot_date"), params.active_days)
    people = people.filter(is_customer | is_active)
    return people.select(
        "snapshot_date",
        "person_id",
        F.when(is_customer, F.col("person_id")).otherwise(F.col("known_customer_id")).alias("customer_id"),
        is_customer.alias("is_customer"),
        F.coalesce("ev_has_email", F.lit(False)).alias("has_email"),
        F.least("first_event_date", "first_order_date").alias("first_seen_date"),
        F.greatest("last_event_date", "last_order_date").alias("last_activity_date"),
        "first_order_date",
        "last_order_date",
        F.coalesce("orders_lifetime", F.lit(0)).cast("int").alias("orders_lifetime"),
        F.datediff(F.col("snapshot_date"), F.col("last_order_date")).cast("int").alias("recency_days"),
        F.coalesce("frequency", F.lit(0)).cast("int").alias("frequency"),
        F.coalesce("monetary", F.lit(0)).cast(MONEY).alias("monetary"),
        *control_columns(
            params.control_salt, params.control_share, F.col("linked_bucket_min"), F.col("linked_bucket_max")
        ),
        *(extra or {}),
    )


def score_snapshot(
    people: DataFrame, params: SnapshotParams, model: SegmentModel, carry: Sequence[str] = ()
) -> DataFrame:
    """Scores and segments for the people of each date, in the declared column order, followed by
    the `carry` columns of `people`.

    Exact and approx percentiles read `people` three times (bounds and bucket sizes go to the
    driver before the final join): callers that care about speed persist it first, so silver is
    scanned once (see `pipeline.publish_dates`).
    """
    scored = with_rfm_scores(people, params)
    segment = model.segment_column()
    return (
        scored.withColumn("segment", segment)
        .withColumn("segment_name", F.element_at(model.lookup("name"), F.col("segment")))
        .withColumn("stage", F.element_at(model.lookup("stage"), F.col("segment")))
        .select(*[F.col(f.name).cast(f.dataType) for f in CUSTOMER_SNAPSHOT.schema.fields], *carry)
    )


def build_snapshot(
    events: DataFrame,
    orders: DataFrame,
    when: Dates,
    params: SnapshotParams,
    model: SegmentModel,
    state: CarriedState | None = None,
) -> DataFrame:
    """The snapshot rows of each date, in the declared column order."""
    return score_snapshot(build_people(events, orders, when, params, state), params, model)
