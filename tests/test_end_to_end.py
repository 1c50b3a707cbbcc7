"""End to end on generated raw data: order of dates and re-runs never change the final tables."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from chispa import assert_df_equality
from helpers import PUBLISHED_DATES, lake_context
from pyspark.sql import functions as F

from clm_spark.app import start_with_deps
from clm_spark.tables import (
    AUDIENCE_CURRENT,
    BRONZE_CLICKSTREAM,
    BRONZE_ORDERS,
    COHORT_RETENTION,
    GOLD_TABLES,
    PIPELINE_RUNS,
    SEGMENT_CATALOG,
)

D1, D2, D3 = PUBLISHED_DATES


@pytest.mark.slow
def test_out_of_order_and_reruns_give_the_in_order_tables(spark, published, tmp_path):
    in_order, raw_dir = published, published.raw

    shuffled = lake_context(spark, tmp_path, raw_dir, "b")
    start_with_deps(shuffled, [D3], "run")
    start_with_deps(shuffled, [D1, D2], "backfill")
    versions = {t.name: shuffled.lake.version(t) for t in GOLD_TABLES}
    start_with_deps(shuffled, [D2], "run")  # a re-run replaces D2 (and D3's movement) with identical rows

    for table in GOLD_TABLES:
        a, b = in_order.lake.read(table), shuffled.lake.read(table)
        assert a.count() > 0, table.name
        assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
        if table not in (AUDIENCE_CURRENT, SEGMENT_CATALOG, COHORT_RETENTION):  # D3 stays the latest
            assert shuffled.lake.version(table) > versions[table.name]

    snap = in_order.lake.read(GOLD_TABLES[0])
    assert snap.groupBy("snapshot_date", "person_id").count().filter("count > 1").count() == 0
    assert snap.filter("segment is null or stage is null").count() == 0
    runs = shuffled.lake.read(PIPELINE_RUNS).collect()
    assert len(runs) == 3 and {r.status for r in runs} == {"succeeded"}
    first = json.loads([r.counts_json for r in runs if r.job == "run" and r.snapshot_dates == str(D3)][0])
    for feed, bronze in (("clickstream", BRONZE_CLICKSTREAM), ("orders", BRONZE_ORDERS)):
        c = first[feed]
        assert c["delivered"] == shuffled.lake.read(bronze).count() > 0
        assert c["delivered"] == c["accepted"] + c["quarantined"] + c["duplicates"]
        assert c["quarantined"] > 0 and c["duplicates"] > 0
    later = [json.loads(r.counts_json) for r in runs if r.job != "run" or r.snapshot_dates != str(D3)]
    assert all(c[f]["delivered"] == 0 for c in later for f in ("clickstream", "orders")), (
        "a re-run ingested again"
    )
    strings = [f.name for f in snap.schema.fields if f.dataType.simpleString() == "string"]
    assert snap.filter(F.exists(F.array(*strings), lambda c: c.contains("@"))).count() == 0


@pytest.mark.slow
def test_daily_runs_on_the_carried_activity_state_equal_one_backfill(spark, published, tmp_path, monkeypatch):
    """Files delivered day by day, one day's clickstream late: the runs after the first read the
    activity state the run before carried, plus newer and late events, and publish what one
    backfill over every file publishes."""
    from benchmarks.run import deliver
    from clm_spark import pipeline
    from clm_spark.tables import CUSTOMER_SNAPSHOT, RFM_CUTPOINTS, SILVER_ACTIVITY_STATE, SILVER_EVENTS

    late = date(2024, 1, 10)
    used = []
    real = pipeline.pair_activity
    monkeypatch.setattr(
        pipeline,
        "pair_activity",
        lambda e, d, state=None: used.append(state is not None) or real(e, d, state),
    )
    landing = tmp_path / "landing"
    daily = lake_context(spark, tmp_path, landing, "daily")
    lake = daily.lake
    held = lambda day, feed_day: day <= feed_day and day != late  # noqa: E731
    deliver(published.raw, landing, lambda day: held(day, D1))
    start_with_deps(daily, [D1], "run")
    state = lake.read(SILVER_ACTIVITY_STATE)
    events = lake.read(SILVER_EVENTS).filter(F.col("event_date") <= D1)
    assert state.count() == events.select("anonymous_id", "customer_id").distinct().count() > 0
    assert {tuple(r) for r in state.select("covered_before", "covered_batch").distinct().collect()} == {
        (D1 + timedelta(days=1), 1)
    }
    for day in (D2, D3):
        deliver(published.raw, landing, lambda x, day=day: x <= day)  # day's files and the late ones
        start_with_deps(daily, [day], "run")
    assert used == [False, True, True]
    assert {
        tuple(r)
        for r in lake.read(SILVER_ACTIVITY_STATE)
        .select("covered_before", "covered_batch")
        .distinct()
        .collect()
    } == {(D3 + timedelta(days=1), 3)}

    # by D3 every file has arrived (D2 lacked events of D2 delivered a day late), and D3 read
    # all events up to D2 from the state
    for table in (CUSTOMER_SNAPSHOT, RFM_CUTPOINTS):
        a = published.lake.read(table).filter(F.col("snapshot_date") == D3)
        b = lake.read(table).filter(F.col("snapshot_date") == D3)
        assert a.count() > 0, table.name
        assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)

    # an earlier date is computed from silver alone and leaves the state where it was
    version = lake.version(SILVER_ACTIVITY_STATE)
    start_with_deps(daily, [D1], "run")
    assert used[-1] is False and lake.version(SILVER_ACTIVITY_STATE) == version
