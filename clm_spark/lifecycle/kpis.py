"""gold/lifecycle_kpis: the numbers a CLM team reports every morning, per date and scope.

Scopes: the whole population (`all`), each stage and each segment of the rules, every one present
on every date (a scope without persons has zero counts and null rates). Everything is computed
from the date's snapshot, the previous snapshot, the transition matrix and the valid orders as of
the date (the latest version of each order decides, as everywhere else): see
docs/tables-and-definitions.md for each metric's window, denominator and grain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import COHORT_RETENTION, LIFECYCLE_KPIS, MONEY

CHURN_STAGE = "reactivate"  # customers who lapse move here (SEGMENTS.md)
SCOPE_KEYS = ["snapshot_date", "scope_type", "scope"]


SEGMENT_KEYS = ["snapshot_date", "segment", "stage"]


def _scoped(df: DataFrame) -> DataFrame:
    """Each row three times: under `all`, under its stage and under its segment."""
    scopes = F.array(
        F.struct(F.lit("all").alias("scope_type"), F.lit("all").alias("scope")),
        F.struct(F.lit("stage").alias("scope_type"), F.col("stage").alias("scope")),
        F.struct(F.lit("segment").alias("scope_type"), F.col("segment").alias("scope")),
    )
    return df.select("*", F.explode(scopes).alias("_scope")).select(
        "*", F.col("_scope.scope_type").alias("scope_type"), F.col("_scope.scope").alias("scope")
    )


def _rolled_up(per_segment: DataFrame, columns: list[str]) -> DataFrame:
    """Figures of each segment (a few rows per date) under every scope, to be summed by `build_kpis`.
    Persons are counted once per segment, so the population is read once, not once per scope."""
    return _scoped(per_segment).select(*SCOPE_KEYS, *columns)


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
    counts = current.groupBy(*SEGMENT_KEYS).agg(
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
    return _rolled_up(counts, [c for c in counts.columns if c not in SEGMENT_KEYS])


def under_following_date(previous: DataFrame, prev_of: Mapping[date, date | None]) -> DataFrame:
    """The previous snapshot's rows under the date they precede (each date has its own previous
    date, `prev_of`, so no rows are needed twice)."""
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
    visitors = under_following_date(previous, prev_of).filter(~F.col("is_customer"))
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
    counts = (
        on_d.join(customers, ["snapshot_date", "key"], "left")
        .groupBy(*SEGMENT_KEYS)
        .agg(
            F.count(F.lit(1)).alias("previous_visitors"),
            _count(F.col("converted")).alias("converted_visitors"),
        )
    )
    return _rolled_up(counts, ["previous_visitors", "converted_visitors"])


FIGURES = [f"{kind}_{label}" for label in ("d", "30d", "365d") for kind in ("orders", "revenue")]
ORDER_FACTS = [*FIGURES, "days_to_second"]  # the columns of `order_facts`, in its order


def order_facts() -> dict[str, Column]:
    """The order figures of a customer on a date, as aggregates of its valid orders (grouped per
    snapshot_date and customer): orders and revenue of D and the trailing 30 and 365 days, and the
    days from the first to the second valid order (same day: 0; null with one order).

    The pipeline computes them in the snapshot's own pass over the valid orders
    (`snapshot.people_of(extra=)`) and carries them on the scored rows, so the KPIs neither read
    the orders again nor join them to the customers' segments (`customer_facts` does, for snapshot
    rows read back from the lake)."""
    d = F.col("snapshot_date")
    since = {"d": d, "30d": F.date_sub(d, 29), "365d": F.date_sub(d, 364)}
    facts = {}
    for label, start in since.items():
        inside = F.col("order_date") >= start
        facts[f"orders_{label}"] = _count(inside)
        facts[f"revenue_{label}"] = F.coalesce(F.sum(F.when(inside, F.col("amount_base"))), F.lit(0))
    second = F.try_element_at(F.sort_array(F.collect_list("order_date")), F.lit(2))
    facts["days_to_second"] = F.datediff(second, F.min("order_date"))
    return facts


def kpi_customers(scored: DataFrame) -> DataFrame:
    """What `build_kpis` reads of each customer: its date, segment, stage and order facts, from
    snapshot rows that carry the `order_facts` columns."""
    return scored.filter("is_customer").select(*SEGMENT_KEYS, *ORDER_FACTS)


def customer_facts(snapshot: DataFrame, valid_orders: DataFrame) -> DataFrame:
    """`kpi_customers` of snapshot rows without the order facts: the facts from the valid orders as
    of the dates (`snapshot.valid_orders_as_of`), joined to the customers."""
    facts = valid_orders.groupBy("snapshot_date", F.col("customer_id").alias("person_id")).agg(
        *[column.alias(name) for name, column in order_facts().items()]
    )
    return kpi_customers(snapshot.join(facts, ["snapshot_date", "person_id"]))


def _orders(customers: DataFrame) -> DataFrame:
    """Order figures of the customers in each scope: order-level sums of the facts, and the
    customers per days to the second order, whose counts weigh the median exactly as the customers
    would (a few thousand rows per date)."""
    per_segment = customers.groupBy(*SEGMENT_KEYS, "days_to_second").agg(
        F.count(F.lit(1)).alias("_customers"), *[F.sum(c).alias(c) for c in FIGURES]
    )
    return _rolled_up(per_segment, [*FIGURES, "days_to_second", "_customers"])


def _flows(matrix: DataFrame, model: SegmentModel) -> DataFrame:
    """Persons entering and leaving each scope since the previous snapshot (new and left included).

    Every way a matrix row counts is one entry of an array exploded in one pass over the matrix:
    a union of filtered copies would make the optimizer push each filter into the join of the two
    snapshots behind the matrix, computing that join once per copy."""
    stage_of = model.lookup("stage")
    segment = {"from": F.col("from_segment"), "to": F.col("to_segment")}
    stage = {end: F.element_at(stage_of, column) for end, column in segment.items()}
    ways = [  # (counts, scope_type, scope, way)
        (segment["from"].isNull(), "all", F.lit("all"), "entered"),
        (segment["from"].isNotNull() & segment["to"].isNull(), "all", F.lit("all"), "left"),
    ]
    for kind, ends in (("segment", segment), ("stage", stage)):
        moved = ~ends["from"].eqNullSafe(ends["to"])
        ways += [
            (moved & ends["to"].isNotNull(), kind, ends["to"], "entered"),
            (moved & ends["from"].isNotNull(), kind, ends["from"], "left"),
        ]
    entries = F.array(
        *[
            F.struct(
                counts.alias("counts"),
                F.lit(kind).alias("scope_type"),
                scope.alias("scope"),
                F.lit(way).alias("way"),
            )
            for counts, kind, scope, way in ways
        ]
    )
    rows = matrix.select("snapshot_date", "persons", F.explode(entries).alias("_way")).filter("_way.counts")
    return rows.select(
        "snapshot_date",
        F.col("_way.scope_type").alias("scope_type"),
        F.col("_way.scope").alias("scope"),
        *[F.when(F.col("_way.way") == way, F.col("persons")).alias(way) for way in ("entered", "left")],
    )


def build_kpis(
    spark: SparkSession,
    current: DataFrame,
    previous: DataFrame,
    prev_of: Mapping[date, date | None],
    matrix: DataFrame,
    customers: DataFrame,
    links: DataFrame,
    model: SegmentModel,
    retention_days: int,
) -> DataFrame:
    """One row per date and scope (`all`, each stage, each segment) with every lifecycle KPI.

    `customers` as `kpi_customers` or `customer_facts` gives them for the dates; `links` maps
    (snapshot_date, anonymous_id) to the customer_id it belongs to on that date.
    """
    # Each part gives rows of figures under their scope; one aggregation sums them all, with the
    # grid's empty rows, into one row per date and scope (a join of the parts would shuffle each).
    parts = [
        _person_counts(current, retention_days),
        _conversions(current, previous, prev_of, links),
        _orders(customers),
        _flows(matrix, model),
    ]
    rows = _grid(spark, sorted(prev_of), model)
    for part in parts:
        rows = rows.unionByName(part, allowMissingColumns=True)
    counts = [f.name for f in LIFECYCLE_KPIS.schema.fields if f.dataType.simpleString() == "bigint"]
    money = [c for c in FIGURES if c.startswith("revenue_")]
    joined = rows.groupBy(*SCOPE_KEYS).agg(
        *[F.sum(c).alias(c) for c in [*counts, *money]],
        F.percentile("days_to_second", 0.5, F.col("_customers")).alias("median_days_first_to_second"),
    )
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


def month_start(d: date) -> date:
    return d.replace(day=1)


def month_end(d: date) -> date:
    following = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def cohort_months_to_write(
    latest: date, publishes_latest: bool, stored: Mapping[date, date], first_month: date | None
) -> dict[date, date]:
    """Activity month -> the as-of date to compute it at.

    `latest` is the latest published date, ours included; `stored` maps each activity month in
    gold/cohort_retention to the as-of date it was computed at; `first_month` is the month of the
    first order in silver (None: no order yet). The month of the latest date is open: a run that
    publishes the latest date rewrites it as of that date. Every month before it, from the first
    order's on, is computed once as of its last day and never again (a later refund does not
    reach it).
    """
    out = {month_start(latest): latest} if publishes_latest else {}
    month = month_start(first_month) if first_month is not None else None
    while month is not None and month < month_start(latest):
        if stored.get(month) != month_end(month):
            out[month] = month_end(month)
        month = month_end(month) + timedelta(days=1)
    return out


def build_cohorts(valid_orders: DataFrame, as_of: Mapping[date, date]) -> DataFrame:
    """gold/cohort_retention rows of each activity month in `as_of` (month -> as-of date), from the
    valid orders as of those dates (`valid_orders_as_of`): per acquisition cohort month up to the
    activity month, its customers, those ordering in the activity month, and the revenue of the
    cohort's valid orders from its first month through the as-of date."""
    month_of = F.create_map(*[x for m, d in as_of.items() for x in (F.lit(d), F.lit(m))])
    orders = valid_orders.filter(F.col("snapshot_date").isin(*as_of.values())).select(
        F.col("snapshot_date").alias("as_of_date"),
        F.element_at(month_of, F.col("snapshot_date")).alias("activity_month"),
        "customer_id",
        F.trunc("order_date", "month").alias("order_month"),
        "amount_base",
    )
    per_customer = orders.groupBy("as_of_date", "activity_month", "customer_id").agg(
        F.min("order_month").alias("cohort_month"),
        F.max(F.col("order_month") == F.col("activity_month")).alias("active"),
        F.sum("amount_base").alias("revenue"),
    )
    cohorts = per_customer.groupBy("activity_month", "cohort_month", "as_of_date").agg(
        F.count(F.lit(1)).alias("cohort_size"),
        _count(F.col("active")).alias("active_customers"),
        F.sum("revenue").alias("cumulative_revenue"),
    )
    months = F.months_between("activity_month", "cohort_month").cast("int")
    return cohorts.select(
        *[
            (months if f.name == "months_since_first" else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in COHORT_RETENTION.schema.fields
        ]
    )
