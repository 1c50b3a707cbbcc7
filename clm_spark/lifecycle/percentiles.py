"""percent_rank over customers without moving every customer into one partition (SPEC §4).

Exact mode: group customers by metric value, split the distinct values into ordered buckets
(bucket = how many approximate quantile bounds lie below the value — monotone, so exact whatever
the bounds), count per bucket (a handful of aggregated rows to the driver), and finish with a
running count inside each bucket (a window partitioned by bucket). The result is exactly
(customers with a strictly worse value) / (n - 1), ties sharing one value, whatever the
partitioning. Approx mode reads the percentile off a quantile sketch with a configured error.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BUCKETS = 64
APPROX_GRID = 1000


def _bounds(values: DataFrame, key: str, buckets: int) -> list:
    probs = [i / buckets for i in range(1, buckets)]
    row = values.agg(F.percentile_approx(key, probs, 10_000).alias("b")).first()
    return sorted(set(row["b"] or []))


def _bucket_of(key: Column, bounds: list) -> Column:
    if not bounds:
        return F.lit(0)
    arr = F.array(*[F.lit(b) for b in bounds])
    return F.size(F.filter(arr, lambda b: b < key))


def worse_counts(customers: DataFrame, key: str) -> tuple[DataFrame, int]:
    """(key, worse) for every distinct key — customers with a strictly smaller key — and n."""
    values = customers.groupBy(key).agg(F.count(F.lit(1)).alias("_c"))
    bounds = _bounds(values, key, BUCKETS)
    values = values.withColumn("_bucket", _bucket_of(F.col(key), bounds))
    totals = {r["_bucket"]: r["n"] for r in values.groupBy("_bucket").agg(F.sum("_c").alias("n")).collect()}
    n = sum(totals.values())
    offsets, running = [], 0
    for b in range(len(bounds) + 1):
        offsets.append(running)
        running += totals.get(b, 0)
    within = Window.partitionBy("_bucket").orderBy(key).rowsBetween(Window.unboundedPreceding, -1)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col("_bucket") + 1)
    worse = values.select(key, (offset + F.coalesce(F.sum("_c").over(within), F.lit(0))).alias("_worse"))
    return worse, n


def with_percentile(
    customers: DataFrame, key: str, out: str, mode: str = "exact", rel_error: float = 0.001
) -> DataFrame:
    """Add `out` = percent_rank of `key` (larger key = better) among the rows of `customers`."""
    if mode == "approx":
        return _approx(customers, key, out, rel_error)
    worse, n = worse_counts(customers, key)
    denom = float(n - 1)
    pct = F.lit(0.0) if n <= 1 else F.col("_worse").cast("double") / F.lit(denom)
    return customers.join(worse.select(key, pct.alias(out)), key, "left")


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
