"""percent_rank over customers without moving every customer into one partition (SPEC §4).

Exact mode: group customers by metric value, split the distinct values into ordered buckets
(bucket = how many approximate quantile bounds lie below the value — monotone, so exact whatever
the bounds), count per bucket (a handful of aggregated rows to the driver), and finish with a
running count inside each bucket (a window partitioned by dimension, group and bucket). The three
dimensions and all groups (snapshot dates) share one pass. The result is exactly
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
    customers: DataFrame,
    keys: dict[str, str],
    mode: str = "exact",
    rel_error: float = 0.001,
    by: str | None = None,
) -> DataFrame:
    """Add one percent_rank column per {key column: output column} (larger key = better).

    Ranks are taken within each value of `by` (a backfill's snapshot dates), or over all rows.
    All dimensions and groups share two small driver round-trips (bucket bounds, bucket sizes:
    at most dimensions x groups x BUCKETS rows) instead of two per dimension, so the upstream
    plan is not recomputed once per dimension.
    """
    if mode == "naive":  # the baseline of `clm bench` only: every customer (of a date) in one partition
        for key, out in keys.items():
            window = Window.orderBy(key) if by is None else Window.partitionBy(by).orderBy(key)
            customers = customers.withColumn(out, F.percent_rank().over(window))
        return customers
    if by is None:
        ranked = with_percentiles(customers.withColumn("_all", F.lit(0)), keys, mode, rel_error, "_all")
        return ranked.drop("_all")
    if mode == "approx":
        for key, out in keys.items():
            customers = _approx(customers, key, out, rel_error, by)
        return customers
    return _exact(customers, keys, by)


def _group_key(dim: Column | str, group: Column) -> Column:
    return F.concat_ws("#", dim, group.cast("string"))


def _exact(customers: DataFrame, keys: dict[str, str], by: str) -> DataFrame:
    values = None
    for key in keys:
        part = customers.groupBy(
            F.lit(key).alias("_dim"), F.col(by).alias("_g"), F.col(key).cast(KEY_TYPE).alias("_k")
        ).agg(F.count(F.lit(1)).alias("_c"))
        values = part if values is None else values.unionByName(part)
    values = values.withColumn("_dg", _group_key(F.col("_dim"), F.col("_g")))
    probs = [i / BUCKETS for i in range(1, BUCKETS)]
    bounds = {
        r["_dg"]: sorted(set(r["b"] or []))
        for r in values.groupBy("_dg").agg(F.percentile_approx("_k", probs, 10_000).alias("b")).collect()
    }
    if not bounds:  # no customers at all
        return customers.select("*", *[F.lit(None).cast("double").alias(out) for out in keys.values()])
    bounds_map = F.create_map(
        *[x for dg, b in bounds.items() for x in (F.lit(dg), F.array(*[F.lit(v).cast(KEY_TYPE) for v in b]))]
    )
    values = values.withColumn("_bucket", _bucket_of(F.col("_k"), F.element_at(bounds_map, F.col("_dg"))))
    sizes = {
        (r["_dg"], r["_bucket"]): r["n"]
        for r in values.groupBy("_dg", "_bucket").agg(F.sum("_c").alias("n")).collect()
    }
    offsets: dict[str, int] = {}
    last_rank: dict[str, int] = {}
    for dg, b in bounds.items():
        running = 0
        for bucket in range(len(b) + 1):
            offsets[f"{dg}#{bucket}"] = running
            running += sizes.get((dg, bucket), 0)
        last_rank[dg] = running - 1  # n - 1: the denominator of percent_rank
    offset_map = F.create_map(*[x for k, o in offsets.items() for x in (F.lit(k), F.lit(o))])
    last_map = F.create_map(*[x for dg, n1 in last_rank.items() for x in (F.lit(dg), F.lit(n1))])
    within = Window.partitionBy("_dg", "_bucket").orderBy("_k").rowsBetween(Window.unboundedPreceding, -1)
    worse = F.element_at(offset_map, _group_key(F.col("_dg"), F.col("_bucket"))) + F.coalesce(
        F.sum("_c").over(within), F.lit(0)
    )
    last = F.element_at(last_map, F.col("_dg"))
    pct = F.when(last <= 0, F.lit(0.0)).otherwise(worse.cast("double") / last.cast("double"))
    ranked = values.select("_dim", "_g", "_k", pct.alias("_pct"))
    out_df = customers
    for key, out in keys.items():
        dim_rank = ranked.filter(F.col("_dim") == key).select(
            F.col("_g").alias(f"_{out}_g"), F.col("_k").alias(f"_{out}_k"), F.col("_pct").alias(out)
        )
        same = (F.col(by) == F.col(f"_{out}_g")) & (F.col(key).cast(KEY_TYPE) == F.col(f"_{out}_k"))
        out_df = out_df.join(dim_rank, same, how="left").drop(f"_{out}_g", f"_{out}_k")
    return out_df


def _approx(customers: DataFrame, key: str, out: str, rel_error: float, by: str) -> DataFrame:
    accuracy = max(100, int(1 / rel_error))
    probs = [i / APPROX_GRID for i in range(APPROX_GRID + 1)]
    rows = (
        customers.groupBy(_group_key(F.lit(key), F.col(by)).alias("_dg"))
        .agg(F.percentile_approx(key, probs, accuracy).alias("q"), F.count(F.lit(1)).alias("n"))
        .collect()
    )  # one row per group
    grids = {r["_dg"]: r["q"] for r in rows if r["n"] > 1}
    if not grids:
        return customers.withColumn(out, F.lit(0.0))
    grid_map = F.create_map(
        *[x for dg, q in grids.items() for x in (F.lit(dg), F.array(*[F.lit(v) for v in q]))]
    )
    grid = F.try_element_at(grid_map, _group_key(F.lit(key), F.col(by)))
    # share of the sketch's quantiles strictly below the value ≈ share of customers strictly worse
    below = F.size(F.filter(grid, lambda q: q < F.col(key))).cast("double")
    return customers.withColumn(
        out, F.when(grid.isNull(), F.lit(0.0)).otherwise(F.least(F.lit(1.0), below / F.lit(APPROX_GRID)))
    )
