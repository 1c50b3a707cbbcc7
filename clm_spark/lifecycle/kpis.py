"""gold/lifecycle_kpis: the numbers a CLM team reports every morning, per date and scope.

Scopes: the whole population (`all`), each stage and each segment of the rules, every one present
on every date (a scope without persons has zero counts and null rates). Everything is computed
from the date's snapshot, the previous snapshot, the transition matrix and the valid orders as of
the date (the latest version of each order decides, as everywhere else): see
docs/tables-and-definitions.md for each metric's window, denominator and grain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import LIFECYCLE_KPIS, MONEY

CHURN_STAGE = "reactivate"  # customers who lapse move here (SEGMENTS.md)
SCOPE_KEYS = ["snapshot_date", "scope_type", "scope"]


def _scoped(df: DataFrame, segment: str = "segment", stage: str = "stage") -> DataFrame:
    """Each row three times: under `all`, under its stage and under its segment."""
    scopes = F.array(
        F.struct(F.lit("all").alias("scope_type"), F.lit("all").alias("scope")),
        F.struct(F.lit("stage").alias("scope_type"), F.col(stage).alias("scope")),
        F.struct(F.lit("segment").alias("scope_type"), F.col(segment).alias("scope")),
    )
    return df.select("*", F.explode(scopes).alias("_scope")).select(
        "*", F.col("_scope.scope_type").alias("scope_type"), F.col("_scope.scope").alias("scope")
    )


def _grid(spark: SparkSession, dates: list[date], model: SegmentModel) -> DataFrame:
    scopes = [("all", "all")] + [("stage", s) for s in model.stages] + [("segment", s) for s in model.ids]
    rows = [(d, kind, scope) for d in dates for kind, scope in scopes]
    return spark.createDataFrame(rows, "snapshot_date date, scope_type string, scope string")


def _ratio(num: str, den: str) -> Column:
    return F.when(F.col(den) > 0, F.col(num) / F.col(den)).cast("double")


def _count(cond: Column) -> Column:
    return F.count(F.when(cond, 1))


def _person_counts(current: DataFrame, retention_days: int) -> DataFrame:
    d = F.col("snapshot_date")
    customer = F.col("is_customer")
    window_start = F.date_sub(d, retention_days)
    base = customer & (F.col("first_order_date") <= window_start)
    retained = base & (F.col("last_order_date") > window_start)
    bought_on_d = customer & (F.col("last_order_date") == d)
    return (
        _scoped(current)
        .groupBy(*SCOPE_KEYS)
        .agg(
            F.count(F.lit(1)).alias("population"),
            _count(customer).alias("customers"),
            _count(~customer).alias("visitors"),
            _count(customer & (F.col("first_order_date") == d)).alias("new_customers"),
            _count(customer & (F.col("orders_lifetime") >= 2)).alias("repeat_customers"),
            _count(bought_on_d).alias("buyers"),
            _count(bought_on_d & (F.col("first_order_date") < d)).alias("returning_buyers"),
            _count(base).alias("retention_base"),
            _count(retained).alias("retained"),
            _count(base & ~retained & (F.col("stage") == F.lit(CHURN_STAGE))).alias("churned"),
        )
    )


def _relabelled(previous: DataFrame, prev_of: Mapping[date, date | None]) -> DataFrame:
    """The previous snapshot's rows under the date they precede."""
    follows = {p: d for d, p in prev_of.items() if p is not None}
    if not follows:
        return previous.limit(0)
    relabel = F.create_map(*[x for p, d in follows.items() for x in (F.lit(p), F.lit(d))])
    rows = previous.filter(F.col("snapshot_date").isin(*follows))
    return rows.withColumn("snapshot_date", F.element_at(relabel, F.col("snapshot_date")))


def _conversions(
    current: DataFrame, previous: DataFrame, prev_of: Mapping[date, date | None], links: DataFrame
) -> DataFrame:
    """Visitors of the previous snapshot, and those of them who are customers on D, in their scope
    of the previous date. A visitor's key on D: the customer its anonymous id maps to on D
    (`links`), else the same key."""
    visitors = _relabelled(previous, prev_of).filter(~F.col("is_customer"))
    anon = F.when(F.col("person_id").startswith("anon:"), F.expr("substring(person_id, 6)"))
    keyed = visitors.select(
        "snapshot_date", "person_id", "segment", "stage", anon.alias("anonymous_id")
    ).join(links, ["snapshot_date", "anonymous_id"], "left")
    on_d = keyed.select(
        "snapshot_date", "segment", "stage", F.coalesce("customer_id", "person_id").alias("key")
    )
    customers = current.filter("is_customer").select(
        "snapshot_date", F.col("person_id").alias("key"), F.lit(True).alias("converted")
    )
    return (
        _scoped(on_d.join(customers, ["snapshot_date", "key"], "left"))
        .groupBy(*SCOPE_KEYS)
        .agg(
            F.count(F.lit(1)).alias("previous_visitors"),
            _count(F.col("converted")).alias("converted_visitors"),
        )
    )


def _orders(current: DataFrame, valid_orders: DataFrame) -> DataFrame:
    """Order-level money of the customers in each scope: D, the trailing 30 and 365 days."""
    d = F.col("snapshot_date")
    since = {"d": d, "30d": F.date_sub(d, 29), "365d": F.date_sub(d, 364)}
    scope = current.filter("is_customer").select(
        "snapshot_date", F.col("person_id").alias("customer_id"), "segment", "stage"
    )
    metrics = []
    for label, start in since.items():
        inside = F.col("order_date") >= start
        metrics += [
            _count(inside).alias(f"orders_{label}"),
            F.coalesce(F.sum(F.when(inside, F.col("amount_base"))), F.lit(0))
            .cast(MONEY)
            .alias(f"revenue_{label}"),
        ]
    per_order = valid_orders.select("snapshot_date", "customer_id", "order_date", "amount_base")
    return _scoped(per_order.join(scope, ["snapshot_date", "customer_id"])).groupBy(*SCOPE_KEYS).agg(*metrics)


def _second_orders(current: DataFrame, valid_orders: DataFrame) -> DataFrame:
    """Median days from the first to the second valid order (same day: 0) of the scope's customers."""
    firsts = valid_orders.groupBy("snapshot_date", "customer_id").agg(
        F.min("order_date").alias("first"),
        F.try_element_at(F.sort_array(F.collect_list("order_date")), F.lit(2)).alias("second"),
    )
    gaps = firsts.filter(F.col("second").isNotNull()).select(
        "snapshot_date", "customer_id", F.datediff("second", "first").alias("days")
    )
    scope = current.select("snapshot_date", F.col("person_id").alias("customer_id"), "segment", "stage")
    return (
        _scoped(gaps.join(scope, ["snapshot_date", "customer_id"]))
        .groupBy(*SCOPE_KEYS)
        .agg(F.median("days").alias("median_days_first_to_second"))
    )


def _flows(matrix: DataFrame, model: SegmentModel) -> DataFrame:
    """Persons entering and leaving each scope since the previous snapshot (new and left included)."""
    stage_of = model.lookup("stage")
    moves = matrix.select(
        "snapshot_date",
        "persons",
        "from_segment",
        "to_segment",
        F.element_at(stage_of, F.col("from_segment")).alias("from_stage"),
        F.element_at(stage_of, F.col("to_segment")).alias("to_stage"),
    )
    parts = []
    for kind in ("segment", "stage"):
        src, dst = F.col(f"from_{kind}"), F.col(f"to_{kind}")
        moved = ~src.eqNullSafe(dst)
        entered = moves.filter(moved & dst.isNotNull()).select("snapshot_date", dst.alias("scope"), "persons")
        left = moves.filter(moved & src.isNotNull()).select("snapshot_date", src.alias("scope"), "persons")
        parts += [
            entered.select("*", F.lit(kind).alias("scope_type"), F.lit("entered").alias("way")),
            left.select("*", F.lit(kind).alias("scope_type"), F.lit("left").alias("way")),
        ]
    whole = moves.filter(F.col("from_segment").isNull() | F.col("to_segment").isNull()).select(
        "snapshot_date",
        F.lit("all").alias("scope"),
        "persons",
        F.lit("all").alias("scope_type"),
        F.when(F.col("from_segment").isNull(), "entered").otherwise("left").alias("way"),
    )
    union = whole
    for part in parts:
        union = union.unionByName(part)
    return union.groupBy(*SCOPE_KEYS).agg(
        F.sum(F.when(F.col("way") == "entered", F.col("persons"))).alias("entered"),
        F.sum(F.when(F.col("way") == "left", F.col("persons"))).alias("left"),
    )


def build_kpis(
    spark: SparkSession,
    current: DataFrame,
    previous: DataFrame,
    prev_of: Mapping[date, date | None],
    matrix: DataFrame,
    valid_orders: DataFrame,
    links: DataFrame,
    model: SegmentModel,
    retention_days: int,
) -> DataFrame:
    """One row per date and scope (`all`, each stage, each segment) with every lifecycle KPI.

    `valid_orders` as `snapshot.valid_orders_as_of` gives them for the dates; `links` maps
    (snapshot_date, anonymous_id) to the customer_id it belongs to on that date.
    """
    grid = _grid(spark, sorted(prev_of), model)
    parts = [
        _person_counts(current, retention_days),
        _conversions(current, previous, prev_of, links),
        _orders(current, valid_orders),
        _second_orders(current, valid_orders),
        _flows(matrix, model),
    ]
    joined = grid
    for part in parts:
        joined = joined.join(part, SCOPE_KEYS, "left")
    counts = [f.name for f in LIFECYCLE_KPIS.schema.fields if f.dataType.simpleString() == "bigint"]
    money = ["revenue_d", "revenue_30d", "revenue_365d"]
    filled = joined.select(
        *SCOPE_KEYS,
        *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in counts],
        *[F.coalesce(F.col(c), F.lit(0)).cast(MONEY).alias(c) for c in money],
        "median_days_first_to_second",
    )
    rated = filled.select(
        "*",
        _ratio("converted_visitors", "previous_visitors").alias("visitor_conversion_rate"),
        _ratio("repeat_customers", "customers").alias("repeat_purchase_rate"),
        _ratio("returning_buyers", "buyers").alias("returning_customer_rate"),
        _ratio("retained", "retention_base").alias("retention_rate"),
        _ratio("churned", "retention_base").alias("churn_rate"),
        F.when(F.col("orders_30d") > 0, F.col("revenue_30d") / F.col("orders_30d")).alias(
            "avg_order_value_30d"
        ),
        F.when(F.col("customers") > 0, F.col("revenue_365d") / F.col("customers")).alias(
            "revenue_per_customer_365d"
        ),
    )
    return rated.select(*[F.col(f.name).cast(f.dataType) for f in LIFECYCLE_KPIS.schema.fields])
