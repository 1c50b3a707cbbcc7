"""Day-over-day segment transitions, the transition matrix, the segment summary and RFM cut-points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.tables import (
    MONEY,
    RFM_CUTPOINTS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
)

PreviousOf = Mapping[date, date | None]


def _previous_date(prev_of: PreviousOf) -> Column:
    """The previous snapshot date of each row's snapshot_date (null on a first snapshot)."""
    pairs = [x for d, p in prev_of.items() for x in (F.lit(d), F.lit(p).cast("date"))]
    return F.element_at(F.create_map(*pairs), F.col("snapshot_date"))


def segment_pairs(
    current: DataFrame, previous: DataFrame, prev_of: PreviousOf, carry: Sequence[str] = ()
) -> DataFrame:
    """Each person's segment and stage on D and on the previous snapshot of D, for every D of
    `prev_of`: one row per person present on either date (a full join of the two snapshots).

    `previous` holds the rows of the previous dates under their own snapshot_date; each one is
    relabelled with the date it precedes (a date precedes at most one of ours). Every column c of
    `carry` comes along as from_c and to_c. The transitions, the matrix, the audience changes and
    the control-group reconciliation all read this one join (the pipeline keeps it).
    """
    follows = {p: d for d, p in prev_of.items() if p is not None}
    kept = ["segment", "stage", *carry]
    cur = current.select("snapshot_date", "person_id", *[F.col(c).alias(f"to_{c}") for c in kept])
    relabel = F.create_map(*[x for p, d in follows.items() for x in (F.lit(p), F.lit(d))])
    prev = previous.filter(F.col("snapshot_date").isin(*follows) if follows else F.lit(False)).select(
        (F.element_at(relabel, F.col("snapshot_date")) if follows else F.col("snapshot_date")).alias(
            "snapshot_date"
        ),
        "person_id",
        *[F.col(c).alias(f"from_{c}") for c in kept],
    )
    joined = prev.join(cur, ["snapshot_date", "person_id"], how="full")
    return joined.select("*", _previous_date(prev_of).alias("previous_snapshot_date"))


def changed(pairs: DataFrame) -> DataFrame:
    """The pairs whose segment differs: new, left or moved."""
    return pairs.filter(~F.col("from_segment").eqNullSafe(F.col("to_segment")))


def build_transitions(pairs: DataFrame) -> DataFrame:
    """One row per date D and person whose segment differs between the previous snapshot and D
    (`pairs` from `segment_pairs`)."""
    return changed(pairs).select(*[F.col(f.name).cast(f.dataType) for f in SEGMENT_TRANSITIONS.schema.fields])


def build_matrix(pairs: DataFrame) -> DataFrame:
    """Persons per date and (from, to) pair, unchanged, new (from null) and left (to null) included
    (`pairs` from `segment_pairs`)."""
    counts = pairs.groupBy("snapshot_date", "from_segment", "to_segment").agg(
        F.count(F.lit(1)).alias("persons")
    )
    return counts.select("snapshot_date", "from_segment", "to_segment", F.col("persons").cast("long")).select(
        *[F.col(f.name).cast(f.dataType) for f in SEGMENT_TRANSITION_MATRIX.schema.fields]
    )


def build_summary(
    spark: SparkSession,
    current: DataFrame,
    transitions: DataFrame,
    dates: Sequence[date],
    model: SegmentModel,
) -> DataFrame:
    """Per date, one row per configured segment: persons, share, money, averages, entered, left (SPEC §8.14)."""
    segments = spark.createDataFrame(
        [(d, r.id, r.name, r.stage) for d in dates for r in model.rules],
        "snapshot_date date, segment string, segment_name string, stage string",
    )
    keys = ["snapshot_date", "segment"]
    # one row per person and one per end of each move, summed with the configured segments in one
    # aggregation: three aggregates joined onto the segments cost a shuffle each and read the
    # transitions twice. Rows of a segment not configured for the date are dropped, as a join would.
    people = current.select(
        *keys,
        F.lit(1).alias("_person"),
        F.col("monetary").alias("_money"),
        F.col("recency_days").alias("_recency"),
        F.col("frequency").cast("double").alias("_frequency"),
    )
    one, none = F.lit(1), F.lit(None).cast("int")
    ends = F.array(
        F.struct(F.col("to_segment").alias("segment"), one.alias("_entered"), none.alias("_left")),
        F.struct(F.col("from_segment").alias("segment"), none.alias("_entered"), one.alias("_left")),
    )
    moves = (
        transitions.select("snapshot_date", F.explode(ends).alias("_end"))
        .select("snapshot_date", "_end.*")
        .filter(F.col("segment").isNotNull())
    )
    rows = segments.withColumn("_configured", F.lit(True)).unionByName(people, allowMissingColumns=True)
    out = (
        rows.unionByName(moves, allowMissingColumns=True)
        .groupBy(*keys)
        .agg(
            F.max("_configured").alias("_configured"),
            F.max("segment_name").alias("segment_name"),  # only the configured row has them
            F.max("stage").alias("stage"),
            F.count("_person").alias("persons"),
            F.sum("_money").alias("_money"),
            F.avg("_recency").alias("avg_recency_days"),
            F.avg("_frequency").alias("avg_frequency"),
            F.avg("_money").alias("_avg_money"),
            F.count("_entered").alias("entered"),
            F.count("_left").alias("left"),
        )
        .filter(F.col("_configured"))
    )
    population = F.sum("persons").over(Window.partitionBy("snapshot_date"))  # segments x dates rows
    return out.select(
        "snapshot_date",
        "segment",
        "segment_name",
        "stage",
        "persons",  # counts: 0 for a configured segment nobody is in, never null
        F.when(population > 0, F.col("persons") / population).otherwise(F.lit(0.0)).alias("share"),
        F.coalesce(F.col("_money"), F.lit(0)).cast(MONEY).alias("monetary_total"),
        F.col("avg_recency_days").cast("double"),
        F.col("avg_frequency").cast("double"),
        F.round(F.col("_avg_money"), 2).cast(MONEY).alias("avg_monetary"),
        "entered",
        "left",
    ).select(*[F.col(f.name).cast(f.dataType) for f in SEGMENT_SUMMARY.schema.fields])


def build_cutpoints(current: DataFrame, bins: int) -> DataFrame:
    """Per date, dimension and score: the value range it covers and its customers; degenerate flag."""
    # each customer gives one row per dimension, all summed in one aggregation (one shuffle where
    # an aggregate per dimension took three); the value is exact in decimal(18,2) before min/max
    scores = F.array(
        *[
            F.struct(
                F.lit(dim).alias("dimension"),
                F.col(f"{dim}_score").alias("score"),
                F.col(metric).cast("decimal(18,2)").alias("value"),
            )
            for dim, metric in (("r", "recency_days"), ("f", "frequency"), ("m", "monetary"))
        ]
    )
    union = (
        current.filter("is_customer")
        .select("snapshot_date", F.explode(scores).alias("_s"))
        .select("snapshot_date", "_s.*")
        .groupBy("snapshot_date", "dimension", "score")
        .agg(
            F.min("value").alias("min_value"),
            F.max("value").alias("max_value"),
            F.count(F.lit(1)).alias("customers"),
        )
    )
    distinct_scores = F.count(F.lit(1)).over(Window.partitionBy("snapshot_date", "dimension"))
    return union.select(
        "snapshot_date",
        "dimension",
        F.col("score").cast("int"),
        "min_value",
        "max_value",
        F.col("customers").cast("long"),
        (distinct_scores < F.lit(bins)).alias("is_degenerate"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in RFM_CUTPOINTS.schema.fields])


def score_shares(snapshot: DataFrame, bins: int) -> dict[str, dict[int, float]]:
    """{dimension: {score: share of the customers}} of one date's snapshot, every score 1..B
    present (0.0 = a hollow bin): the customers per score of `build_cutpoints` (≤ 3 × B rows)."""
    counts = {dim: dict.fromkeys(range(1, bins + 1), 0) for dim in "rfm"}
    for row in build_cutpoints(snapshot, bins).select("dimension", "score", "customers").collect():
        counts[row.dimension][row.score] += row.customers
    total = sum(counts["r"].values())
    return {dim: {s: (n / total if total else 0.0) for s, n in per.items()} for dim, per in counts.items()}
