"""gold/customer_snapshot for one date D (SPEC §4, §8): population, RFM metrics, scores, segments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clm_spark.lifecycle.percentiles import with_percentiles
from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import CUSTOMER_SNAPSHOT, MONEY

VALID_STATUSES = ("placed", "completed")


@dataclass(frozen=True)
class SnapshotParams:
    lookback_days: int = 365
    active_days: int = 90
    score_bins: int = 5
    percentile: str = "exact"
    approx_relative_error: float = 0.001


def _until_end_of(d: date) -> F.Column:
    """`ts` up to the end of UTC day D, as a plain timestamp bound Parquet can skip row groups with."""
    return F.lit(d + timedelta(days=1)).cast("timestamp")


def identity_as_of(identity: DataFrame, d: date) -> DataFrame:
    """anonymous_id → customer_id of its latest linking event up to D (ties: larger customer_id)."""
    links = identity.filter(F.col("event_time") < _until_end_of(d))
    latest = F.max(F.struct("event_time", "customer_id")).getField("customer_id")
    return links.groupBy("anonymous_id").agg(latest.alias("mapped_customer_id"))


def person_activity(events: DataFrame, identity: DataFrame, d: date) -> DataFrame:
    """Per person: first/last event date, has_email and the known customer id (SPEC §8.9–8.12).

    Events are first reduced to one row per (anonymous_id, customer_id) — min, max and any are
    associative — so the identity join moves a few rows per visitor instead of every event.
    """
    visible = events.filter(F.col("event_date") <= F.lit(d))
    per_id = visible.groupBy("anonymous_id", "customer_id").agg(
        F.min("event_date").alias("first_event_date"),
        F.max("event_date").alias("last_event_date"),
        F.max(F.coalesce("has_email", F.lit(False))).alias("ev_has_email"),
    )
    mapped = per_id.join(identity_as_of(identity, d), "anonymous_id", "left")
    known = F.coalesce(F.col("customer_id"), F.col("mapped_customer_id"))
    person = F.coalesce(known, F.concat(F.lit("anon:"), F.col("anonymous_id")))
    return (
        mapped.select(person.alias("person_id"), known.alias("known_customer_id"), *per_id.columns[2:])
        .groupBy("person_id")
        .agg(
            F.min("first_event_date").alias("first_event_date"),
            F.max("last_event_date").alias("last_event_date"),
            F.max("ev_has_email").alias("ev_has_email"),
            F.max("known_customer_id").alias("known_customer_id"),
        )
    )


def valid_orders_as_of(orders: DataFrame, d: date) -> DataFrame:
    """The latest accepted version of each order recorded up to D, kept when placed/completed and dated ≤ D.

    Silver holds one row per (order_id, updated_at), so the max of a struct led by updated_at
    is that latest version (cheaper than max_by, and deterministic by construction).
    """
    recorded = orders.filter(F.col("updated_at") < _until_end_of(d))
    latest = recorded.groupBy("order_id").agg(
        F.max(F.struct("updated_at", "customer_id", "order_date", "status", "amount_base")).alias("v")
    )
    return latest.select("order_id", "v.customer_id", "v.order_date", "v.status", "v.amount_base").filter(
        F.col("status").isin(*VALID_STATUSES) & (F.col("order_date") <= F.lit(d))
    )


def customer_metrics(valid_orders: DataFrame, d: date, lookback_days: int) -> DataFrame:
    in_window = F.col("order_date") > F.lit(d - timedelta(days=lookback_days))
    return valid_orders.groupBy(F.col("customer_id").alias("person_id")).agg(
        F.count(F.lit(1)).cast("int").alias("orders_lifetime"),
        F.min("order_date").alias("first_order_date"),
        F.max("order_date").alias("last_order_date"),
        F.count(F.when(in_window, 1)).cast("int").alias("frequency"),
        F.coalesce(F.sum(F.when(in_window, F.col("amount_base"))), F.lit(0)).cast(MONEY).alias("monetary"),
    )


def _score(pct: str, bins: int) -> F.Column:
    return F.when(
        F.col(pct).isNotNull(), F.least(F.lit(bins), (F.floor(F.col(pct) * F.lit(bins)) + 1).cast("int"))
    ).cast("int")


def with_rfm_scores(people: DataFrame, params: SnapshotParams) -> DataFrame:
    """Percentiles and scores for customers; visitors keep nulls."""
    customers = people.filter("is_customer").select(
        "person_id",
        (-F.col("recency_days")).alias("_r_key"),
        F.col("frequency").alias("_f_key"),
        F.col("monetary").alias("_m_key"),
    )
    keys = {f"_{dim}_key": f"{dim}_percentile" for dim in "rfm"}
    scored = with_percentiles(customers, keys, params.percentile, params.approx_relative_error)
    scored = scored.select("person_id", "r_percentile", "f_percentile", "m_percentile")
    out = people.join(scored, "person_id", "left")
    b = params.score_bins
    out = out.select(
        "*",
        _score("r_percentile", b).alias("r_score"),
        _score("f_percentile", b).alias("f_score"),
        _score("m_percentile", b).alias("m_score"),
    )
    return out.withColumn(
        "rfm_cell", F.when(F.col("is_customer"), F.concat_ws("", "r_score", "f_score", "m_score"))
    )


def build_people(
    events: DataFrame, orders: DataFrame, identity: DataFrame, d: date, params: SnapshotParams
) -> DataFrame:
    """The population of D with its RFM metrics, before scoring (one row per person)."""
    activity = person_activity(events, identity, d)
    metrics = customer_metrics(valid_orders_as_of(orders, d), d, params.lookback_days)
    people = metrics.join(activity, "person_id", "full")
    is_customer = F.col("orders_lifetime").isNotNull()
    active_since = F.lit(d - timedelta(days=params.active_days))
    people = people.filter(is_customer | (F.col("last_event_date") > active_since))
    return people.select(
        "person_id",
        F.when(is_customer, F.col("person_id")).otherwise(F.col("known_customer_id")).alias("customer_id"),
        is_customer.alias("is_customer"),
        F.coalesce("ev_has_email", F.lit(False)).alias("has_email"),
        F.least("first_event_date", "first_order_date").alias("first_seen_date"),
        F.greatest("last_event_date", "last_order_date").alias("last_activity_date"),
        "first_order_date",
        "last_order_date",
        F.coalesce("orders_lifetime", F.lit(0)).cast("int").alias("orders_lifetime"),
        F.datediff(F.lit(d), F.col("last_order_date")).cast("int").alias("recency_days"),
        F.coalesce("frequency", F.lit(0)).cast("int").alias("frequency"),
        F.coalesce("monetary", F.lit(0)).cast(MONEY).alias("monetary"),
    )


def score_snapshot(people: DataFrame, d: date, params: SnapshotParams, model: SegmentModel) -> DataFrame:
    """Scores and segments for the people of D, in the declared column order.

    Exact and approx percentiles read `people` three times (bounds and bucket sizes go to the
    driver before the final join): callers that care about speed persist it first, so silver is
    scanned once (see `pipeline.publish_date`).
    """
    scored = with_rfm_scores(people, params)
    segment = model.segment_column()
    return (
        scored.withColumn("segment", segment)
        .withColumn("segment_name", F.element_at(model.lookup("name"), F.col("segment")))
        .withColumn("stage", F.element_at(model.lookup("stage"), F.col("segment")))
        .withColumn("snapshot_date", F.lit(d))
        .select(*[F.col(f.name).cast(f.dataType) for f in CUSTOMER_SNAPSHOT.schema.fields])
    )


def build_snapshot(
    events: DataFrame,
    orders: DataFrame,
    identity: DataFrame,
    d: date,
    params: SnapshotParams,
    model: SegmentModel,
) -> DataFrame:
    """The snapshot rows of D, in the declared column order."""
    return score_snapshot(build_people(events, orders, identity, d, params), d, params, model)
