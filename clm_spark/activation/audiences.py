"""Segments turned into action: the daily audience changes, the current audience, the segment
catalog, and one segment's audience as a file. Pure functions of DataFrames (the export writes)."""

from __future__ import annotations

import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import SegmentModel
from clm_spark.lifecycle.transitions import changed
from clm_spark.tables import AUDIENCE_CHANGES, AUDIENCE_CURRENT, SEGMENT_CATALOG

CONTACT = ("customer_id", "has_email", "is_control", "control_mixed")


def _declared(df: DataFrame, spec) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType) for f in spec.schema.fields])


def change_id(snapshot_date: Column, person_id: Column, from_segment: Column, to_segment: Column) -> Column:
    """sha256 of the date, the person and both segments: the same change gets the same id on a
    re-run, and a change that a re-run alters gets a new one."""
    parts = [
        snapshot_date.cast("string"),
        person_id,
        F.coalesce(from_segment, F.lit("")),
        F.coalesce(to_segment, F.lit("")),
    ]
    return F.substring(F.sha2(F.concat_ws("|", *parts), 256), 1, 32)


def audience_changes(pairs: DataFrame) -> DataFrame:
    """One row per transition, with the person's contact key and control flag: as on the date for
    those present on it, as on the previous snapshot for those who left. `pairs` from
    `transitions.segment_pairs` carrying CONTACT."""
    present = F.col("to_segment").isNotNull()
    change = F.when(F.col("from_segment").isNull(), "entered").when(present, "moved").otherwise("left")
    contact = [F.when(present, F.col(f"to_{c}")).otherwise(F.col(f"from_{c}")).alias(c) for c in CONTACT]
    return _declared(  # keeps the declared columns only: the from_ / to_ copies go
        changed(pairs).select(
            "*",
            change_id(
                F.col("snapshot_date"), F.col("person_id"), F.col("from_segment"), F.col("to_segment")
            ).alias("change_id"),
            change.alias("change"),
            *contact,
        ),
        AUDIENCE_CHANGES,
    )


def audience_current(snapshot: DataFrame) -> DataFrame:
    """Every person of the snapshot's latest date (the caller passes that date's rows)."""
    return _declared(snapshot, AUDIENCE_CURRENT)


def segment_catalog(spark: SparkSession, model: SegmentModel) -> DataFrame:
    """One row per segment of the rules, with its playbook, under the rules' version."""
    rows = []
    for position, rule in enumerate(model.rules, start=1):
        condition = {
            "when": {field: (list(cond) if isinstance(cond, tuple) else cond) for field, cond in rule.when},
            "cells": sorted(rule.cells) if rule.cells is not None else None,
        }
        book = rule.playbook
        rows.append(
            (
                model.version,
                position,
                rule.id,
                rule.name,
                rule.stage,
                json.dumps(condition, sort_keys=True),
                book.goal,
                ",".join(book.campaigns) or None,
                ",".join(book.channels) or None,
                book.priority,
            )
        )
    return spark.createDataFrame(rows, SEGMENT_CATALOG.schema)


def segment_audience(snapshot: DataFrame, segment: str, include_control: bool) -> DataFrame:
    """The persons of one segment (control group out unless asked), sorted by person."""
    members = snapshot.filter(F.col("segment") == F.lit(segment))
    chosen = members if include_control else members.filter(~F.col("is_control"))
    return chosen.select("snapshot_date", "person_id", *CONTACT, "segment", "segment_name", "stage").orderBy(
        "person_id"
    )
