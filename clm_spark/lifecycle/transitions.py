"""Day-over-day segment transitions, the transition matrix, the segment summary and RFM cut-points."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import (
    MONEY,
    RFM_CUTPOINTS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
)


def _pairs(current: DataFrame, previous: DataFrame) -> DataFrame:
    cur = current.select("person_id", F.col("segment").alias("to_segment"), F.col("stage").alias("to_stage"))
    prev = previous.select(
        "person_id", F.col("segment").alias("from_segment"), F.col("stage").alias("from_stage")
    )
    return prev.join(cur, "person_id", "full")


def build_transitions(current: DataFrame, previous: DataFrame, d: date, prev_date: date | None) -> DataFrame:
    """One row per person whose segment differs between the previous snapshot and D."""
    changed = _pairs(current, previous).filter(~F.col("from_segment").eqNullSafe(F.col("to_segment")))
    return changed.select(
        F.lit(d).alias("snapshot_date"),
        F.lit(prev_date).cast("date").alias("previous_snapshot_date"),
        "person_id",
        "from_segment",
        "to_segment",
        "from_stage",
        "to_stage",
    ).select(*[F.col(f.name).cast(f.dataType) for f in SEGMENT_TRANSITIONS.schema.fields])


def build_matrix(current: DataFrame, previous: DataFrame, d: date) -> DataFrame:
    """Persons per (from, to) pair, unchanged, new (from null) and left (to null) included."""
    counts = (
        _pairs(current, previous)
        .groupBy("from_segment", "to_segment")
        .agg(F.count(F.lit(1)).alias("persons"))
    )
    return counts.select(
        F.lit(d).alias("snapshot_date"), "from_segment", "to_segment", F.col("persons").cast("long")
    ).select(*[F.col(f.name).cast(f.dataType) for f in SEGMENT_TRANSITION_MATRIX.schema.fields])


def build_summary(
    spark: SparkSession, current: DataFrame, transitions: DataFrame, d: date, model: SegmentModel
) -> DataFrame:
    """One row per configured segment: persons, share, money, averages, entered, left (SPEC §8.14)."""
    segments = spark.createDataFrame(
        [(r.id, r.name, r.stage) for r in model.rules], "segment string, segment_name string, stage string"
    )
    per = current.groupBy("segment").agg(
        F.count(F.lit(1)).alias("persons"),
        F.sum("monetary").alias("_money"),
        F.avg("recency_days").alias("avg_recency_days"),
        F.avg(F.col("frequency").cast("double")).alias("avg_frequency"),
        F.avg("monetary").alias("_avg_money"),
    )
    entered = (
        transitions.filter(F.col("to_segment").isNotNull())
        .groupBy(F.col("to_segment").alias("segment"))
        .agg(F.count(F.lit(1)).alias("entered"))
    )
    left = (
        transitions.filter(F.col("from_segment").isNotNull())
        .groupBy(F.col("from_segment").alias("segment"))
        .agg(F.count(F.lit(1)).alias("left"))
    )
    out = (
        segments.join(per, "segment", "left")
        .join(entered, "segment", "left")
        .join(left, "segment", "left")
        .withColumn("persons", F.coalesce("persons", F.lit(0)))
    )
    pop = out.crossJoin(out.agg(F.sum("persons").alias("_pop")))  # one row: the population of D
    return pop.select(
        F.lit(d).alias("snapshot_date"),
        "segment",
        "segment_name",
        "stage",
        F.col("persons").cast("long").alias("persons"),
        F.when(F.col("_pop") > 0, F.col("persons") / F.col("_pop")).otherwise(F.lit(0.0)).alias("share"),
        F.coalesce(F.col("_money"), F.lit(0)).cast(MONEY).alias("monetary_total"),
        F.col("avg_recency_days").cast("double"),
        F.col("avg_frequency").cast("double"),
        F.round(F.col("_avg_money"), 2).cast(MONEY).alias("avg_monetary"),
        F.coalesce("entered", F.lit(0)).cast("long").alias("entered"),
        F.coalesce("left", F.lit(0)).cast("long").alias("left"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in SEGMENT_SUMMARY.schema.fields])


def build_cutpoints(current: DataFrame, d: date, bins: int) -> DataFrame:
    """Per dimension and score: the value range it covers and its customers; degenerate flag."""
    customers = current.filter("is_customer")
    parts = []
    for dim, metric in (("r", "recency_days"), ("f", "frequency"), ("m", "monetary")):
        parts.append(
            customers.groupBy(F.col(f"{dim}_score").alias("score"))
            .agg(
                F.min(metric).cast("decimal(18,2)").alias("min_value"),
                F.max(metric).cast("decimal(18,2)").alias("max_value"),
                F.count(F.lit(1)).alias("customers"),
            )
            .withColumn("dimension", F.lit(dim))
        )
    union = parts[0].unionByName(parts[1]).unionByName(parts[2])
    distinct_scores = F.count(F.lit(1)).over(Window.partitionBy("dimension"))
    return union.select(
        F.lit(d).alias("snapshot_date"),
        "dimension",
        F.col("score").cast("int"),
        "min_value",
        "max_value",
        F.col("customers").cast("long"),
        (distinct_scores < F.lit(bins)).alias("is_degenerate"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in RFM_CUTPOINTS.schema.fields])
