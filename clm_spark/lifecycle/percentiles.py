"""percent_rank over customers without moving every customer into one partition (SPEC §4).

Exact mode: group customers by metric value, split the distinct values into ordered buckets
(bucket = how many approximate quantile bounds lie below the value — monotone, so exact whatever
the bounds), count per bucket (a handful of aggregated rows to the driver), and finish with a
running count inside each bucket (a window partitioned by dimension and bucket). The three dimensions share one pass.
The result is exactly
(customers with a strictly worse value) / (n - 1), ties sharing one value, whatever the
partitioning. Approx mode reads the percentile off a quantile sketch with a configured error.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BUCKETS = 64
APPROX_GRID = 1000


KEY_TYPE = "decimal(20,2)"  # holds -recency days, order counts and money exactly


def _bucket_of(key: Column, bounds: Column) -> Column:
    return F.coalesce(F.size(F.filter(bounds, lambda b: b < key)), F.lit(0))


def with_percentiles(
    customers: DataFrame, keys: dict[str, str], mode: str = "exact", rel_error: float = 0.001
) -> DataFrame:
    """Add one percent_rank column per {key column: output column} (larger key = better).

    All dimensions share two small driver round-trips (bucket bounds, bucket sizes) instead of
    two per dimension, so the upstream plan is not recomputed once per dimension.
    """
    if mode == "naive":  # the baseline of `clm bench` only: every customer moves into one partition
        for key, out in keys.items():
            customers = customers.withColumn(out, F.percent_rank().over(Window.orderBy(key)))
        return customers
    if mode == "approx":
        for key, out in keys.items():
            customers = _approx(customers, key, out, rel_error)
        return customers
    values = None
    for key in keys:
        part = customers.groupBy(F.lit(key).alias("_dim"), F.col(key).cast(KEY_TYPE).alias("_k")).agg(
            F.count(F.lit(1)).alias("_c")
        )
        values = part if values is None else values.unionByName(part)
    probs = [i / BUCKETS for i in range(1, BUCKETS)]
    bounds = {
        r["_dim"]: sorted(set(r["b"] or []))
        for r in values.groupBy("_dim").agg(F.percentile_approx("_k", probs, 10_000).alias("b")).collect()
    }
    bounds_map = (
        F.create_map(
            *[
                x
                for dim, b in bounds.items()
                for x in (F.lit(dim), F.array(*[F.lit(v).cast(KEY_TYPE) for v in b]))
            ]
        )
        if bounds
        else None
    )
    if bounds_map is None:  # no customers at all
        return customers.select("*", *[F.lit(None).cast("double").alias(out) for out in keys.values()])
    values = values.withColumn("_bucket", _bucket_of(F.col("_k"), F.element_at(bounds_map, F.col("_dim"))))
    sizes = values.groupBy("_dim", "_bucket").agg(F.sum("_c").alias("n")).collect()
    offsets: dict[tuple[str, int], int] = {}
    totals: dict[str, int] = {}
    for dim in keys:
        running = 0
        for b in range(len(bounds.get(dim, [])) + 1):
            offsets[(dim, b)] = running
            running += next((r["n"] for r in sizes if r["_dim"] == dim and r["_bucket"] == b), 0)
        totals[dim] = running
    offset_map = F.create_map(
        *[x for (dim, b), o in offsets.items() for x in (F.lit(f"{dim}#{b}"), F.lit(o))]
    )
    within = Window.partitionBy("_dim", "_bucket").orderBy("_k").rowsBetween(Window.unboundedPreceding, -1)
    worse = F.element_at(offset_map, F.concat_ws("#", "_dim", F.col("_bucket").cast("string"))) + F.coalesce(
        F.sum("_c").over(within), F.lit(0)
    )
    ranked = values.select("_dim", "_k", worse.alias("_worse"))
    out_df = customers
    for key, out in keys.items():
        n = totals[key]
        pct = F.lit(0.0) if n <= 1 else F.col("_worse").cast("double") / F.lit(float(n - 1))
        dim_rank = ranked.filter(F.col("_dim") == key).select(F.col("_k").alias(f"_{out}_k"), pct.alias(out))
        out_df = out_df.join(dim_rank, F.col(key).cast(KEY_TYPE) == F.col(f"_{out}_k"), "left").drop(
            f"_{out}_k"
        )
    return out_df


def _approx(customers: DataFrame, key: str, out: str, rel_error: float) -> DataFrame:
    accuracy = max(100, int(1 / rel_error))
    probs = [i / APPROX_GRID for i in range(APPROX_GRID + 1)]
    row = customers.agg(
        F.percentile_approx(key, probs, accuracy).alias("q"), F.count(F.lit(1)).alias("n")
    ).first()
    if not row["n"] or row["n"] <= 1:
        return customers.withColumn(out, F.lit(0.0))
    grid = F.array(*[F.lit(q) for q in row["q"]])
    # share of the sketch's quantiles strictly below the value ≈ share of customers strictly worse
    below = F.size(F.filter(grid, lambda q: q < F.col(key))).cast("double")
    return customers.withColumn(out, F.least(F.lit(1.0), below / F.lit(APPROX_GRID)))
