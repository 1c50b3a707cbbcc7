"""Both Delta engines publish the same lake (delta-spark with Spark alone in the driver: test_cluster).

Skipped only where the Delta JVM connector is absent (no ../shared/delta and no CLM_DELTA_JARS).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from conftest import NO_DELTA_REASON
from helpers import PUBLISHED_DATES, lake_context

from benchmarks.run import deliver
from clm_spark.app import start_with_deps
from clm_spark.lake import delta_spark_available, open_lake
from clm_spark.sample.generate import generate
from clm_spark.tables import ALL_TABLES, CUSTOMER_SNAPSHOT, GOLD_TABLES, PIPELINE_RUNS, SEGMENT_SUMMARY

D1, D2, D3 = PUBLISHED_DATES
LATE = D2  # the files of D2 arrive after D3's
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


def _publish_in_steps(spark, raw: Path, tmp_path: Path, engine: str):
    """A backfill, a daily run on the carried state, then a late date published out of order (which
    recomputes the movement of the date after it). The gate is tested elsewhere: validation off here."""
    landing = tmp_path / f"landing-{engine}"
    ctx = lake_context(spark, tmp_path, landing, f"lake-{engine}", engine=engine)
    deliver(raw, landing, lambda day: day <= D1)
    start_with_deps(ctx, [D1 - timedelta(days=1), D1], "backfill")
    deliver(raw, landing, lambda day: day <= D3 and day != LATE)
    start_with_deps(ctx, [D3], "run")
    deliver(raw, landing, lambda day: day <= D3)  # the late files
    start_with_deps(ctx, [D2], "run")
    return ctx.lake


def _stable(df):
    return df.drop(*[c for c in df.columns if c in VOLATILE])


@pytest.mark.slow
def test_both_engines_publish_identical_silver_gold_and_run_records(spark, tmp_path, needs_delta_spark):
    raw = tmp_path / "raw"  # small: the point is what each engine writes, not volume
    generate(raw, persons=60, days=8, start=D3 - timedelta(days=7), seed=9, bad_rate=0.05)
    rs = _publish_in_steps(spark, raw, tmp_path, "delta-rs")
    ds = _publish_in_steps(spark, raw, tmp_path, "delta-spark")
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

    assert runs(rs) == runs(ds) and len(runs(ds)[0]) == 3
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
