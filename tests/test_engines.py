"""Both Delta engines publish the same lake (delta-spark with Spark alone in the driver: test_cluster).

Skipped only where the Delta JVM connector is absent (no ../shared/delta and no CLM_DELTA_JARS).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from chispa import assert_df_equality
from conftest import NO_DELTA_REASON
from helpers import PUBLISHED_DATES, publish_day_by_day

from clm_spark.lake import delta_spark_available, open_lake
from clm_spark.tables import ALL_TABLES, CUSTOMER_SNAPSHOT, GOLD_TABLES, PIPELINE_RUNS, SEGMENT_SUMMARY

D1, D2, D3 = PUBLISHED_DATES
# values that differ between two runs of the same input: when and by which run they were ingested
# (and the id Delta gives each lake's silver/events, which the activity state records)
VOLATILE = {
    "_ingested_at",
    "ingested_at",
    "run_id",
    "started_at",
    "ended_at",
    "table_versions",
    "events_table_id",
}


@pytest.fixture(scope="module")
def needs_delta_spark(spark):
    if not delta_spark_available(spark):
        pytest.skip(NO_DELTA_REASON)


def _stable(df):
    return df.drop(*[c for c in df.columns if c in VOLATILE])


@pytest.mark.slow
def test_both_engines_publish_identical_silver_gold_and_run_records(
    spark, published, day_by_day, tmp_path, needs_delta_spark
):
    """The day-by-day steps of conftest `day_by_day` (a backfill, late files, daily runs on the
    carried state, an earlier date re-run) with delta-spark, against that delta-rs lake."""
    rs = day_by_day.ctx.lake
    ds = publish_day_by_day(spark, published.raw, tmp_path, "delta-spark").ctx.lake
    assert ds.engine == "delta-spark" and rs.engine == "delta-rs"
    for spec in ALL_TABLES:
        assert rs.exists(spec) == ds.exists(spec), spec.name
        if spec is PIPELINE_RUNS or not rs.exists(spec):  # predictions are off here
            continue
        a, b = _stable(rs.read(spec)), _stable(ds.read(spec))
        assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
    for spec in GOLD_TABLES:
        assert rs.read(spec).count() > 0, spec.name
    dates = {r[0] for r in ds.read(SEGMENT_SUMMARY).select("snapshot_date").distinct().collect()}
    assert dates == {D1 - timedelta(days=1), D1, D2, D3}

    def runs(lake):
        rows = sorted(lake.read(PIPELINE_RUNS).collect(), key=lambda r: r.started_at)
        outcome = [re.sub(r" \(report: [^)]*\)", "", r.validation) for r in rows]  # paths differ
        return [(r.job, r.snapshot_dates, r.status, json.loads(r.counts_json)) for r in rows], outcome

    assert runs(rs) == runs(ds) and len(runs(ds)[0]) == 4
    assert {r.engine for r in ds.read(PIPELINE_RUNS).collect()} == {"delta-spark"}
    # every commit of a run carries its run id on both engines
    run_ids = {r.run_id for r in ds.read(PIPELINE_RUNS).collect()}
    assert ds.commit_metadata(CUSTOMER_SNAPSHOT, ds.version(CUSTOMER_SNAPSHOT))["clm.run_id"] in run_ids


def test_published_dates_are_unchanged_by_the_engine_choice_of_readers(spark, published, needs_delta_spark):
    """A delta-rs lake opened with delta-spark reads the same rows and versions."""
    ds = open_lake(spark, published.lake.root, "delta-spark")
    for spec in GOLD_TABLES:
        assert ds.version(spec) == published.lake.version(spec)
        assert ds.table_id(spec) == published.lake.table_id(spec)
        assert_df_equality(
            ds.read(spec),
            published.lake.read(spec),
            ignore_row_order=True,
            ignore_nullable=True,
            ignore_metadata=True,
        )
