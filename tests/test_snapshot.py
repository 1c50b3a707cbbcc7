"""build_snapshot and percentiles; the hand-worked case is the golden scenario lifecycle_basics (D = 2024-03-31)."""

from __future__ import annotations

import io
import random
from contextlib import redirect_stdout
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import reduce
from operator import or_
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from benchmarks.naive import naive_percentiles
from clm_spark.lifecycle import percentiles
from clm_spark.lifecycle.percentiles import with_percentiles
from clm_spark.lifecycle.segments import load_segments
from clm_spark.lifecycle.snapshot import (
    CarriedState,
    SnapshotParams,
    build_people,
    build_snapshot,
    carried_state,
    pair_activity,
    score_snapshot,
    with_rfm_scores,
)
from clm_spark.tables import CUSTOMER_SNAPSHOT

D = date(2024, 3, 31)
EV = "event_date date, event_time timestamp, customer_id string, anonymous_id string, has_email boolean"
OR = "order_id string, customer_id string, order_date date, updated_at timestamp, status string, amount_base decimal(18,2)"


def d(s: str) -> date:
    return date.fromisoformat(s)


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def ev(at: str, customer: str | None, visitor: str | None, email: bool | None) -> tuple:
    return (d(at[:10]), ts(at), customer, visitor, email)


EVENTS = [
    ev("2024-03-15 10:00:00", None, "a7", True),  # loyal visitor
    ev("2024-01-01 10:00:00", None, "a8", False),  # 90 days before D: outside (D-90, D]
    ev("2024-01-02 10:00:00", None, "a9", False),  # 89 days before D: an engaged visitor
    ev("2024-03-01 10:00:00", None, "a10", True),  # anonymous browsing, later stitched to c10
    ev("2024-03-05 10:00:00", "c10", "a10", False),  # login links a10 -> c10
    ev("2024-03-20 10:00:00", "c11", "a11", None),  # logged-in visitor without orders
    ev("2024-03-25 10:00:00", "c12a", "a12", False),  # two links at the same instant: larger id wins
    ev("2024-03-25 10:00:00", "c12b", "a12", False),
    ev("2024-03-25 11:00:00", None, "a12", False),
    ev("2024-04-01 10:00:00", None, "a13", True),  # after D: invisible
    ev("2024-04-01 10:00:00", "c99", "a10", False),  # a later login re-links a10 after D: ignored
    ev("2024-03-28 10:00:00", "c14", None, False),  # a customer id without a visitor id
]
ORDERS = [
    ("o1", "c1", d("2024-03-01"), ts("2024-03-01 10:00:00"), "completed", Decimal("100.00")),
    ("o1x", "c1", d("2024-04-01"), ts("2024-04-01 10:00:00"), "placed", Decimal("999.00")),  # after D
    ("o2", "c2", d("2024-01-31"), ts("2024-01-31 10:00:00"), "placed", Decimal("50.00")),  # recency 60
    ("o3", "c3", d("2024-01-30"), ts("2024-01-30 10:00:00"), "completed", Decimal("50.00")),  # recency 61
    ("o4a", "c4", d("2024-03-31"), ts("2024-03-31 23:59:59"), "placed", Decimal("200.00")),
    (
        "o4b",
        "c4",
        d("2023-04-01"),
        ts("2023-04-01 10:00:00"),
        "completed",
        Decimal("500.00"),
    ),  # = D-365: outside
    ("o5", "c5", d("2024-03-10"), ts("2024-03-10 10:00:00"), "placed", Decimal("10.00")),
    ("o5", "c5", d("2024-03-10"), ts("2024-03-20 10:00:00"), "cancelled", Decimal("10.00")),  # cancelled <= D
    ("o6", "c6", d("2024-03-10"), ts("2024-03-10 10:00:00"), "placed", Decimal("74.00")),
    ("o6", "c6", d("2024-03-10"), ts("2024-04-02 10:00:00"), "refunded", Decimal("74.00")),  # refund after D
    ("o10", "c10", d("2024-03-05"), ts("2024-03-05 10:05:00"), "completed", Decimal("50.00")),
]
# The same case as the golden scenario tests/scenarios/lifecycle_basics (its raw files hold these
# events and orders): build_snapshot must give the rows worked out by hand there.
BASICS = Path(__file__).parent / "scenarios" / "lifecycle_basics"


@pytest.fixture(scope="module")
def model():
    return load_segments("conf/segments.yaml", 5)


def _expected(spark):
    return spark.read.csv(
        str(BASICS / "then" / "customer_snapshot.csv"), header=True, schema=CUSTOMER_SNAPSHOT.schema
    )


def snapshot(events, orders, when, params, model, state=None):
    """build_snapshot as the pipeline runs it: the people of the dates are materialised once,
    then scored (exact percentiles read them three times; recomputing them is what costs here)."""
    people = build_people(events, orders, when, params, state).localCheckpoint(eager=True)
    return score_snapshot(people, params, model)


def _snapshot(spark, model, params=SnapshotParams()):
    return build_snapshot(
        spark.createDataFrame(EVENTS, EV),
        spark.createDataFrame(ORDERS, OR),
        D,
        params,
        model,
    )


def test_golden_snapshot_matches_hand_worked_rows(spark, model):
    assert_df_equality(
        _snapshot(spark, model),
        _expected(spark),
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


@pytest.mark.parametrize("adaptive", ["false", "true"])
def test_snapshot_is_identical_whatever_the_partitioning(spark, model, adaptive):
    previous = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", adaptive)  # the product runs with Spark's default: on
    try:
        events = spark.createDataFrame(EVENTS, EV).repartition(7)
        orders = spark.createDataFrame(ORDERS, OR).repartition(5, "status")
        again = snapshot(events, orders, D, SnapshotParams(), model)
        assert_df_equality(
            again, _expected(spark), ignore_row_order=True, ignore_nullable=True, ignore_metadata=True
        )
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", previous)


def test_single_customer_gets_percentile_zero(spark, model):
    orders = spark.createDataFrame([ORDERS[0]], OR)
    snap = snapshot(spark.createDataFrame([], EV), orders, D, SnapshotParams(), model)
    row = snap.collect()[0]
    assert (row.r_percentile, row.f_percentile, row.m_percentile, row.rfm_cell) == (0.0, 0.0, 0.0, "111")


def _random_orders(spark, n: int, seed: int = 3):
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        for k in range(rnd.choice([1, 1, 2, 3, 5])):
            day = date.fromordinal(D.toordinal() - rnd.randint(0, 400))
            amount = Decimal(rnd.choice([10, 20, 35, 50, 1000])) + Decimal(rnd.randint(0, 3)) / 4
            rows.append(
                (
                    f"o{i}-{k}",
                    f"c{i:05d}",
                    day,
                    datetime(day.year, day.month, day.day, 12),
                    "completed",
                    amount,
                )
            )
    return spark.createDataFrame(rows, OR)


def test_exact_percentiles_equal_sql_percent_rank(spark, model):
    orders = _random_orders(spark, 1500)
    snap = snapshot(spark.createDataFrame([], EV), orders, D, SnapshotParams(), model)
    cust = snap.filter("is_customer")
    reference = cust.select(
        "person_id",
        F.percent_rank().over(Window.orderBy(F.desc("recency_days"))).alias("r"),
        F.percent_rank().over(Window.orderBy("frequency")).alias("f"),
        F.percent_rank().over(Window.orderBy("monetary")).alias("m"),
    )
    diff = cust.join(reference, "person_id").filter(
        (F.col("r") != F.col("r_percentile"))
        | (F.col("f") != F.col("f_percentile"))
        | (F.col("m") != F.col("m_percentile"))
    )
    assert cust.count() == 1500 and diff.count() == 0


def _plan(df) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        df.explain(mode="formatted")
    return buf.getvalue()


def test_snapshot_plan_never_moves_customers_into_one_partition(spark, model):
    snap = build_snapshot(
        spark.createDataFrame([], EV),
        _random_orders(spark, 300),
        D,
        SnapshotParams(),
        model,
    )
    assert "SinglePartition" not in _plan(snap)
    naive = snap.withColumn("naive", F.percent_rank().over(Window.orderBy("monetary")))
    assert "SinglePartition" in _plan(naive), "the check must catch the naive un-partitioned window"


def _tree(plan: str) -> str:
    """The operator tree of a formatted plan (without the per-operator details below it)."""
    return plan.split("== Physical Plan ==")[1].split("\n\n")[0]


def test_one_date_plan_scans_each_input_once_and_shuffles_no_more_than_several(spark):
    events, orders = spark.createDataFrame(EVENTS, EV), spark.createDataFrame(ORDERS, OR)
    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")  # the plan a large lake gets
    try:
        one = _plan(build_people(events, orders, D, SnapshotParams()))
        two = _plan(build_people(events, orders, [D, date(2024, 4, 1)], SnapshotParams()))
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)
    physical = _tree(one)
    # events and orders (identity links are events): a filter pushed below an aggregation once
    # scanned events twice
    assert physical.count("Scan ExistingRDD") + physical.count("LocalTableScan") == 2, physical
    # a one-date literal key folded out of the joins (not the aggregations) added three shuffles;
    # now both plans shuffle for the visitor aggregation, the visitor window, the person
    # aggregation, the order window and the per-customer order metrics
    assert physical.count("Exchange") <= _tree(two).count("Exchange") == 5, physical


def test_approx_mode_scores_stay_close_to_exact(spark, model):
    orders = _random_orders(spark, 2000, seed=11)
    empty_ev = spark.createDataFrame([], EV)
    exact = snapshot(empty_ev, orders, D, SnapshotParams(), model)
    approx = snapshot(
        empty_ev, orders, D, SnapshotParams(percentile="approx", approx_relative_error=0.001), model
    )
    pairs = exact.filter("is_customer").alias("e").join(approx.alias("a"), "person_id")
    far_apart = reduce(
        or_, [F.abs(F.col(f"e.{c}") - F.col(f"a.{c}")) > 1 for c in ("r_score", "f_score", "m_score")]
    )
    customers, far, differ = pairs.agg(  # one pass: both snapshots are computed once
        F.count(F.lit(1)).alias("customers"),
        F.count(F.when(far_apart, 1)).alias("far"),
        F.count(F.when(F.col("e.rfm_cell") != F.col("a.rfm_cell"), 1)).alias("differ"),
    ).first()
    assert customers == 2000 and far == 0
    assert differ <= 0.05 * 2000, f"{differ} cells differ"


def test_several_dates_at_once_equal_each_date_alone(spark, model):
    """A backfill computes its dates in one pass: same rows as one date at a time.

    The dates straddle every change in the data: o5 cancelled on 03-20, a10 re-linked to c99,
    o1x and a13 appearing on 04-01, o6 refunded on 04-02, and o7 whose first version is
    superseded the day it was recorded (it must never be seen as placed).
    """
    extra = [
        ("o7", "c7", d("2024-03-19"), ts("2024-03-19 09:00:00"), "placed", Decimal("30.00")),
        ("o7", "c7", d("2024-03-19"), ts("2024-03-19 18:00:00"), "cancelled", Decimal("30.00")),
        ("o8", "c8", d("2024-03-18"), ts("2024-03-18 09:00:00"), "placed", Decimal("12.50")),
        ("o8", "c8", d("2024-03-18"), ts("2024-03-31 09:00:00"), "completed", Decimal("12.50")),
    ]
    events = spark.createDataFrame(EVENTS, EV).repartition(3)
    orders = spark.createDataFrame(ORDERS + extra, OR)
    dates = [d("2024-03-19"), d("2024-03-20"), d("2024-04-01"), d("2024-04-02")]
    at_once = snapshot(events, orders, dates, SnapshotParams(), model).localCheckpoint()  # read twice
    one_by_one = [snapshot(events, orders, x, SnapshotParams(), model) for x in dates]
    expected = one_by_one[0]
    for df in one_by_one[1:]:
        expected = expected.unionByName(df)
    assert_df_equality(at_once, expected, ignore_row_order=True, ignore_nullable=True)
    seen = {(r.snapshot_date, r.person_id): r for r in at_once.collect()}
    assert "c7" not in {k[1] for k in seen}  # o7 was cancelled the day it was placed
    assert seen[(d("2024-03-19"), "c5")].orders_lifetime == 1 and (d("2024-03-20"), "c5") not in seen
    assert {x for x, p in seen if p == "c8"} == set(dates)
    assert seen[(d("2024-04-01"), "c99")].first_seen_date == d("2024-03-01")  # a10's history moves to c99
    assert seen[(d("2024-04-02"), "c1")].orders_lifetime == 2 and (d("2024-04-02"), "c6") not in seen


@pytest.mark.parametrize(
    "mode, broadcast",
    [("exact", True), ("exact", False), (naive_percentiles, False)],
    ids=["exact-broadcast", "exact-shuffle", "naive"],
)
def test_a_null_key_is_not_ranked_and_not_counted(spark, monkeypatch, mode, broadcast):
    """Visitors reach the percentiles with null keys: they get nulls and do not count in n.

    Exact mode looks the values up through a broadcast join or, with many values, a shuffle.
    """
    monkeypatch.setattr(percentiles, "BROADCAST_VALUES", 500_000 if broadcast else 0)
    rows = [("g1", "p1", 10), ("g1", "p2", 20), ("g1", "p3", 20), ("g1", "v1", None), ("g1", "p4", 30)]
    rows += [("g2", "p5", 5), ("g2", "v2", None)]
    frame = spark.createDataFrame(rows, "g string, person string, k int")
    ranked = with_percentiles(frame, {"k": "pct"}, mode, by="g").select("g", "person", "pct")
    expected = spark.createDataFrame(
        [
            ("g1", "p1", 0.0),
            ("g1", "p2", 1 / 3),  # one row strictly worse, n - 1 = 3 (v1 not counted)
            ("g1", "p3", 1 / 3),
            ("g1", "v1", None),
            ("g1", "p4", 1.0),
            ("g2", "p5", 0.0),  # alone in its group
            ("g2", "v2", None),
        ],
        "g string, person string, pct double",
    )
    assert_df_equality(ranked, expected, ignore_row_order=True, ignore_nullable=True)


EVB = EV + ", _batch_id long"
PAIR = (
    "anonymous_id string, customer_id string, first_event_date date, last_event_date date, "
    "has_email boolean, last_seen timestamp"
)


def test_a_carried_state_plus_newer_and_late_events_gives_the_snapshot_of_all_events(spark, model):
    """Batch 1 is summarised as of 2024-03-20; batch 2 brings newer events and a late one (03-10)
    that re-links a1 (to c30, no orders). The state with batch 2 (and batch 1's event dated after 03-20) gives what
    all events give, for one date and several."""
    batch1 = [
        (*ev("2024-03-01 10:00:00", None, "a1", True), 1),
        (*ev("2024-03-05 10:00:00", "c1", "a1", False), 1),
        (*ev("2024-03-07 09:00:00", None, "a1", None), 1),
        (*ev("2024-03-15 10:00:00", "c2", None, False), 1),
        (*ev("2024-03-28 10:00:00", None, "a2", True), 1),  # dated after the state's day
    ]
    batch2 = [
        (*ev("2024-03-10 10:00:00", "c30", "a1", False), 2),  # late: a1's latest link is now c30
        (*ev("2024-03-25 10:00:00", None, "a3", False), 2),
        (*ev("2024-04-02 10:00:00", "c4", "a3", False), 2),  # after D
    ]
    day = date(2024, 3, 20)
    summary = carried_state(pair_activity(spark.createDataFrame(batch1, EVB), day), day)
    expected = [
        ("a1", None, d("2024-03-01"), d("2024-03-07"), True, ts("2024-03-07 09:00:00")),
        ("a1", "c1", d("2024-03-05"), d("2024-03-05"), False, ts("2024-03-05 10:00:00")),
        (None, "c2", d("2024-03-15"), d("2024-03-15"), False, ts("2024-03-15 10:00:00")),
    ]
    assert_df_equality(
        summary, spark.createDataFrame(expected, PAIR), ignore_row_order=True, ignore_nullable=True
    )

    state = CarriedState(summary, day + timedelta(days=1), 1)
    events = spark.createDataFrame(batch1 + batch2, EVB)
    orders = spark.createDataFrame(ORDERS, OR)
    for when in ([day, D], D):
        carried = snapshot(events, orders, when, SnapshotParams(), model, state)
        full = snapshot(events.drop("_batch_id"), orders, when, SnapshotParams(), model)
        assert_df_equality(carried, full, ignore_row_order=True, ignore_nullable=True)
    c30 = carried.filter("person_id = 'c30'")  # the snapshot of D alone
    assert [(r.first_seen_date, r.last_activity_date, r.has_email) for r in c30.collect()] == [
        (d("2024-03-01"), d("2024-03-10"), True)
    ]  # a1's anonymous events from the state, mapped through the late link

    assert not state.serves([day - timedelta(days=1)])
    with pytest.raises(ValueError, match="covers events dated before 2024-03-21: not 2024-03-19"):
        pair_activity(events, day - timedelta(days=1), state)


def test_threshold_scoring_fills_the_bins_that_ties_hollow_out(spark):
    """Most customers bought once: percentiles give f scores 1 and 5 only; bounds 2/3/4/6 give
    1 / 2 / 3 / 4-5 / 6+ orders -> 1..5. Recency by bounds 30/60/90/180 days (smaller is better);
    m stays on percentiles; visitors keep null scores."""
    rows = [  # person, is_customer, recency_days, frequency, monetary
        ("p1", True, 0, 1, "10.00"),
        ("p2", True, 30, 1, "10.00"),
        ("p3", True, 59, 1, "10.00"),
        ("p4", True, 60, 2, "20.00"),
        ("p5", True, 120, 3, "30.00"),
        ("p6", True, 179, 5, "50.00"),
        ("p7", True, 180, 6, "60.00"),
        ("p8", True, 400, 9, "90.00"),
        ("v1", False, None, 0, "0.00"),
    ]
    people = spark.createDataFrame(
        [(D, p, c, r, f, Decimal(m)) for p, c, r, f, m in rows],
        "snapshot_date date, person_id string, is_customer boolean, recency_days int, frequency int, "
        "monetary decimal(18,2)",
    )
    bounds = {"r": tuple(map(Decimal, (30, 60, 90, 180))), "f": tuple(map(Decimal, (2, 3, 4, 6)))}
    scored = {r.person_id: r for r in with_rfm_scores(people, SnapshotParams(thresholds=bounds)).collect()}
    assert [scored[p].f_score for p in ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")] == [
        1,
        1,
        1,
        2,
        3,
        4,
        5,
        5,
    ]
    assert [scored[p].r_score for p in ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")] == [
        5,
        4,
        4,
        3,
        2,
        2,
        1,
        1,
    ]
    # m by percentiles as before: three tied at the bottom share percentile 0
    assert [scored[p].m_score for p in ("p1", "p2", "p3", "p8")] == [1, 1, 1, 5]
    assert scored["p4"].rfm_cell == "323"  # m: 3 of 7 others strictly worse -> 1 + floor(5 * 3/7)
    v = scored["v1"]
    assert (v.r_score, v.f_score, v.m_score, v.rfm_cell) == (None, None, None, None)
    # the default, percentiles everywhere, is unchanged: two orders rank 3 of 7 -> f score 3
    default = {r.person_id: r.f_score for r in with_rfm_scores(people, SnapshotParams()).collect()}
    assert default["p1"] == default["p2"] == default["p3"] == 1 and default["p4"] == 3
