"""The naive percentile job of the benchmark: what a first version of the snapshot looks like."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def naive_percentiles(rows: DataFrame, keys: dict[str, str], by: str | None) -> DataFrame:
    """One `percent_rank` window per key over every ranked row (of a group): a single partition.

    A row missing any key is left out of every ranking (callers null all keys together). Pass it
    as `SnapshotParams.percentile`, which accepts such a function in place of a mode name.
    """
    present = F.lit(True)
    for key in keys:
        present = present & F.col(key).isNotNull()
    ranked, unranked = rows.filter(present), rows.filter(~present)
    for key, out in keys.items():
        window = Window.orderBy(key) if by is None else Window.partitionBy(by).orderBy(key)
        ranked = ranked.withColumn(out, F.percent_rank().over(window))
    return ranked.unionByName(
        unranked.select("*", *[F.lit(None).cast("double").alias(o) for o in keys.values()])
    )
