"""End to end on generated raw data: order of dates and re-runs never change the final tables."""

from __future__ import annotations

import json
from datetime import timedelta

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
def test_daily_runs_on_the_carried_activity_state_equal_one_backfill(published, day_by_day):
    """Files delivered day by day, one day's files late (conftest `day_by_day`): the runs after the
    first read the activity state the run before carried, plus newer and late events, and publish
    what one backfill over every file publishes."""
    from clm_spark.tables import CUSTOMER_SNAPSHOT, RFM_CUTPOINTS, SILVER_ACTIVITY_STATE, SILVER_EVENTS

    lake, after = day_by_day.ctx.lake, day_by_day.versions

    def state_at(step):
        return lake.read(SILVER_ACTIVITY_STATE, version=after[step][SILVER_ACTIVITY_STATE.name])

    def covered(step):
        return {
            tuple(r) for r in state_at(step).select("covered_before", "covered_batch").distinct().collect()
        }

    # the backfill of D1 - 1 and D1 carries every visitor-id pair of the events up to D1
    events = lake.read(SILVER_EVENTS, version=after[0][SILVER_EVENTS.name]).filter(F.col("event_date") <= D1)
    assert state_at(0).count() == events.select("anonymous_id", "customer_id").distinct().count() > 0
    assert covered(0) == {(D1 + timedelta(days=1), 1)}
    # D2 and D3 read it; the re-run of D1 and the recomputed movement of D2 read silver alone
    assert day_by_day.used_state == [False, True, True, False, False]
    assert covered(2) == {(D3 + timedelta(days=1), 3)}

    # by D3 every file has arrived (D1 lacked the late day's), and D3 read all events up to D2
    # from the state
    for table in (CUSTOMER_SNAPSHOT, RFM_CUTPOINTS):
        a = published.lake.read(table).filter(F.col("snapshot_date") == D3)
        b = lake.read(table).filter(F.col("snapshot_date") == D3)
        assert a.count() > 0, table.name
        assert_df_equality(a, b, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)

    # an earlier date is computed from silver alone and leaves the state where it was
    assert after[3][SILVER_ACTIVITY_STATE.name] == after[2][SILVER_ACTIVITY_STATE.name]
