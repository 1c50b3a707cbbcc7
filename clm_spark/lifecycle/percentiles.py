"""percent_rank over customers without moving every customer into one partition (SPEC §4).

Exact mode: count the rows per distinct metric value, split the distinct values into ordered
buckets (bucket = how many approximate quantile bounds lie below the value — monotone, so exact
whatever the bounds), and finish with a running count inside each bucket (a window partitioned
by group and bucket) plus the sizes of the buckets before it. Bounds and bucket sizes are a few
aggregated rows per dimension and group, brought to the driver in two small jobs shared by all
dimensions and groups (snapshot dates); each row then looks its values up, through a broadcast
join when a dimension has few distinct values. The result is exactly
(rows with a strictly smaller value) / (n - 1), ties sharing one value, whatever the
partitioning. Approx mode reads the percentile off a quantile sketch with a configured error.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BUCKETS = 64
# a dimension with at most this many distinct values per run (~40 bytes each) is looked up
# through a broadcast join: recency and frequency always, money up to a few million customers
BROADCAST_VALUES = 500_000
APPROX_GRID = 1000


KEY_TYPE = "decimal(20,2)"  # holds -recency days, order counts and money exactly


def with_percentiles(
    rows: DataFrame,
    keys: dict[str, str],
    mode: str | Callable = "exact",
    rel_error: float = 0.001,
    by: str | None = None,
) -> DataFrame:
    """Add one percent_rank column per {key column: output column} (larger key = better).

    Ranks are taken within each value of `by` (a backfill's snapshot dates), or over all rows.
    A row whose key is null is not ranked: it gets a null percentile and does not count in n.
    """
    if callable(mode):  # a ranking of the caller's own (the benchmark's naive job passes one)
        return mode(rows, keys, by)
    if by is None:
        ranked = with_percentiles(rows.withColumn("_all", F.lit(0)), keys, mode, rel_error, "_all")
        return ranked.drop("_all")
    if mode == "approx":
        for key, out in keys.items():
            rows = _approx(rows, key, out, rel_error, by)
        return rows
    return _exact(rows, keys, by)


def _exact(rows: DataFrame, keys: dict[str, str], by: str) -> DataFrame:
    # per dimension: (group, distinct value) -> rows holding it; kept apart so that each
    # dimension's lookup below recomputes only its own aggregation of the (cached) rows
    values = {
        key: rows.filter(F.col(key).isNotNull())
        .groupBy(F.col(by).alias("_g"), F.col(key).cast(KEY_TYPE).alias("_k"))
        .agg(F.count(F.lit(1)).alias("_c"))
        .withColumn("_dg", _group_key(F.lit(key), F.col("_g")))  # "dim#group": the driver maps' key
        for key in keys
    }
    probs = [i / BUCKETS for i in range(1, BUCKETS)]
    sketches = _union(
        v.groupBy("_dg").agg(F.percentile_approx("_k", probs, 10_000).alias("_b")) for v in values.values()
    )
    bounds = {r["_dg"]: sorted(set(r["_b"] or [])) for r in sketches.collect()}
    if not bounds:  # nothing to rank
        return rows.select("*", *[F.lit(None).cast("double").alias(out) for out in keys.values()])
    bounds_map = F.create_map(
        *[x for dg, b in bounds.items() for x in (F.lit(dg), F.array(*[F.lit(v).cast(KEY_TYPE) for v in b]))]
    )
    bucketed = {
        key: v.withColumn("_bucket", _bucket_of(F.col("_k"), F.element_at(bounds_map, F.col("_dg"))))
        for key, v in values.items()
    }
    counted = _union(
        v.groupBy(F.lit(key).alias("_dim"), "_dg", "_bucket").agg(
            F.sum("_c").alias("n"), F.count(F.lit(1)).alias("distinct")
        )
        for key, v in bucketed.items()
    ).collect()
    distinct = {key: sum(r["distinct"] for r in counted if r["_dim"] == key) for key in keys}
    offsets, last_rank = _offsets(bounds, {(r["_dg"], r["_bucket"]): r["n"] for r in counted})
    offset_map = F.create_map(*[x for k, o in offsets.items() for x in (F.lit(k), F.lit(o))])
    last_map = F.create_map(*[x for dg, n1 in last_rank.items() for x in (F.lit(dg), F.lit(n1))])
    within = Window.partitionBy("_g", "_bucket").orderBy("_k").rowsBetween(Window.unboundedPreceding, -1)
    out = rows
    for key, name in keys.items():
        worse = F.element_at(offset_map, _group_key(F.col("_dg"), F.col("_bucket"))) + F.coalesce(
            F.sum("_c").over(within), F.lit(0)
        )
        last = F.element_at(last_map, F.col("_dg"))
        pct = F.when(last <= 0, F.lit(0.0)).otherwise(worse.cast("double") / last.cast("double"))
        ranked = bucketed[key].select(
            F.col("_g").alias(f"_{name}_g"), F.col("_k").alias(f"_{name}_k"), pct.alias(name)
        )
        if distinct[key] <= BROADCAST_VALUES:  # the rows are then not shuffled for the lookup
            ranked = F.broadcast(ranked)
        same = (F.col(by) == F.col(f"_{name}_g")) & (F.col(key).cast(KEY_TYPE) == F.col(f"_{name}_k"))
        out = out.join(ranked, same, how="left").drop(f"_{name}_g", f"_{name}_k")
    return out


def _offsets(bounds: dict[str, list], sizes: dict[tuple[str, int], int]) -> tuple[dict, dict]:
    """Rows in the buckets before each bucket ("dim#group#bucket"), and n - 1 per "dim#group"."""
    offsets: dict[str, int] = {}
    last_rank: dict[str, int] = {}
    for dg, b in bounds.items():
        running = 0
        for bucket in range(len(b) + 1):
            offsets[f"{dg}#{bucket}"] = running
            running += sizes.get((dg, bucket), 0)
        last_rank[dg] = running - 1  # n - 1: the denominator of percent_rank
    return offsets, last_rank


def _union(frames) -> DataFrame:
    return reduce(DataFrame.unionByName, frames)


def _bucket_of(key: Column, bounds: Column) -> Column:
    return F.coalesce(F.size(F.filter(bounds, lambda b: b < key)), F.lit(0))


def _group_key(dim: Column | str, group: Column) -> Column:
    return F.concat_ws("#", dim, group.cast("string"))


def _approx(rows: DataFrame, key: str, out: str, rel_error: float, by: str) -> DataFrame:
    accuracy = max(100, int(1 / rel_error))
    probs = [i / APPROX_GRID for i in range(APPROX_GRID + 1)]
    sketches = (
        rows.groupBy(_group_key(F.lit(key), F.col(by)).alias("_dg"))
        .agg(F.percentile_approx(key, probs, accuracy).alias("q"), F.count(key).alias("n"))
        .collect()
    )  # one row per group
    grids = {r["_dg"]: r["q"] for r in sketches if r["n"] > 1}
    if not grids:
        return rows.withColumn(out, F.when(F.col(key).isNotNull(), F.lit(0.0)))
    grid_map = F.create_map(
        *[x for dg, q in grids.items() for x in (F.lit(dg), F.array(*[F.lit(v) for v in q]))]
    )
    grid = F.try_element_at(grid_map, _group_key(F.lit(key), F.col(by)))
    # share of the sketch's quantiles strictly below the value ≈ share of customers strictly worse
    below = F.size(F.filter(grid, lambda q: q < F.col(key))).cast("double")
    pct = F.when(grid.isNull(), F.lit(0.0)).otherwise(F.least(F.lit(1.0), below / F.lit(APPROX_GRID)))
    return rows.withColumn(out, F.when(F.col(key).isNotNull(), pct))
