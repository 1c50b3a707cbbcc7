"""gold/lifecycle_kpis on a hand-worked case: a refund, a conversion through an identity link, a
visitor who left the population, the retention window, and an empty day.

D = 2024-01-10, previous snapshot 2024-01-09, kpis.retention_days = 5 (window start 2024-01-05).
Orders as of D: c1 01-01 50.00, 01-08 100.00 refunded on D (not valid), 01-10 30.00; c2 01-10
20.00 (its first). On the previous date c1 was a champion and anon:v2 (loyal visitor) and
anon:v3 (engaged visitor) were visitors; on D v2's anonymous id is linked to c2 and v3 is gone.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality

from clm_spark.lifecycle.kpis import build_cohorts, build_kpis, cohort_months_to_write, customer_facts
from clm_spark.lifecycle.segments import load_segments
from clm_spark.lifecycle.snapshot import SnapshotParams, valid_orders_as_of
from clm_spark.lifecycle.transitions import build_matrix, segment_pairs
from clm_spark.pipeline import Sources, snapshot_frames

D0, D, EMPTY = date(2024, 1, 9), date(2024, 1, 10), date(2024, 1, 11)
PEOPLE = (
    "snapshot_date date, person_id string, is_customer boolean, first_order_date date, "
    "last_order_date date, orders_lifetime int, segment string, stage string"
)


@pytest.fixture(scope="module")
def model():
    return load_segments("conf/segments.yaml", 5)


def _orders(spark):
    def at(day, hour=12):
        return datetime(2024, 1, day, hour)

    rows = [
        ("o1", "c1", date(2024, 1, 1), at(1), "completed", Decimal("50.00")),
        ("o2", "c1", date(2024, 1, 8), at(8), "completed", Decimal("100.00")),
        ("o2", "c1", date(2024, 1, 8), at(10), "refunded", Decimal("100.00")),
        ("o3", "c1", date(2024, 1, 10), at(10), "placed", Decimal("30.00")),
        ("o4", "c2", date(2024, 1, 10), at(10), "completed", Decimal("20.00")),
    ]
    schema = "order_id string, customer_id string, order_date date, updated_at timestamp, status string, amount_base decimal(18,2)"
    return spark.createDataFrame(rows, schema)


def _kpis(spark, model):
    current = spark.createDataFrame(
        [
            (D, "c1", True, date(2024, 1, 1), D, 2, "champions", "cherish"),
            (D, "c2", True, D, D, 1, "first_time_customer", "retain"),
            (D, "anon:v1", False, None, None, 0, "engaged_visitor", "acquire"),
        ],
        PEOPLE,
    )
    previous = spark.createDataFrame(
        [
            (D0, "c1", True, date(2024, 1, 1), date(2024, 1, 8), 2, "champions", "cherish"),
            (D0, "anon:v2", False, None, None, 0, "loyal_visitor", "acquire"),
            (D0, "anon:v3", False, None, None, 0, "engaged_visitor", "acquire"),
        ],
        PEOPLE,
    )
    links = spark.createDataFrame(
        [(D, "v2", "c2")], "snapshot_date date, anonymous_id string, customer_id string"
    )
    prev_of = {D: D0}
    matrix = build_matrix(segment_pairs(current, previous, prev_of))
    customers = customer_facts(current, valid_orders_as_of(_orders(spark), [D]))
    kpis = build_kpis(spark, current, previous, prev_of, matrix, customers, links, model, 5)
    return {(r.scope_type, r.scope): r.asDict() for r in kpis.collect()}


def test_every_kpi_of_the_whole_population_worked_out_by_hand(spark, model):
    rows = _kpis(spark, model)
    assert len(rows) == 1 + 5 + 14  # all, every stage, every segment
    assert rows[("all", "all")] == {
        "snapshot_date": D,
        "scope_type": "all",
        "scope": "all",
        "population": 3,
        "customers": 2,
        "visitors": 1,
        "new_customers": 1,  # c2
        "previous_visitors": 2,  # v2, v3
        "converted_visitors": 1,  # v2 -> c2 through the link
        "visitor_conversion_rate": 0.5,
        "repeat_customers": 1,  # c1
        "repeat_purchase_rate": 0.5,
        "buyers": 2,  # both ordered on D
        "returning_buyers": 1,  # c1
        "returning_customer_rate": 0.5,
        "retention_base": 1,  # c1: first order 01-01 <= 01-05
        "retained": 1,  # and ordered after 01-05
        "retention_rate": 1.0,
        "churned": 0,
        "churn_rate": 0.0,
        "orders_d": 2,
        "revenue_d": Decimal("50.00"),  # 30 + 20
        "orders_30d": 3,  # the refunded 100.00 is not valid as of D
        "revenue_30d": Decimal("100.00"),
        "avg_order_value_30d": Decimal("33.33333333"),
        "orders_365d": 3,
        "revenue_365d": Decimal("100.00"),
        "revenue_per_customer_365d": Decimal("50.00000000"),
        "median_days_first_to_second": 9.0,  # c1: 01-01 -> 01-10 (the refunded 01-08 does not count)
        "entered": 2,  # c2 and v1 are new
        "left": 2,  # v2 (now c2) and v3 are gone
    }


def test_stages_and_segments_split_the_same_persons(spark, model):
    rows = _kpis(spark, model)
    acquire = rows[("stage", "acquire")]
    assert (acquire["population"], acquire["previous_visitors"], acquire["converted_visitors"]) == (1, 2, 1)
    assert (acquire["entered"], acquire["left"]) == (1, 2)
    loyal = rows[("segment", "loyal_visitor")]
    assert (loyal["population"], loyal["visitor_conversion_rate"], loyal["left"]) == (0, 1.0, 1)
    retain = rows[("stage", "retain")]
    assert (retain["new_customers"], retain["returning_customer_rate"], retain["revenue_d"]) == (
        1,
        0.0,
        Decimal("20.00"),
    )
    assert retain["repeat_purchase_rate"] == 0.0 and retain["median_days_first_to_second"] is None
    for kind in ("stage", "segment"):
        assert sum(r["population"] for (k, _), r in rows.items() if k == kind) == 3
        assert sum(r["revenue_365d"] for (k, _), r in rows.items() if k == kind) == Decimal("100.00")
    lost = rows[("segment", "lost")]
    assert (
        lost["population"] == 0
        and lost["repeat_purchase_rate"] is None
        and lost["revenue_d"] == Decimal("0.00")
    )


def test_an_empty_day_has_every_scope_with_zeros_and_no_rates(spark, model):
    empty = spark.createDataFrame([], PEOPLE)
    orders = customer_facts(empty, valid_orders_as_of(_orders(spark).limit(0), [EMPTY]))
    links = spark.createDataFrame([], "snapshot_date date, anonymous_id string, customer_id string")
    matrix = build_matrix(segment_pairs(empty, empty, {EMPTY: None}))
    rows = build_kpis(spark, empty, empty, {EMPTY: None}, matrix, orders, links, model, 5).collect()
    assert len(rows) == 20
    for row in rows:
        assert row.population == row.customers == row.orders_365d == row.entered == row.left == 0
        assert row.revenue_365d == Decimal("0.00")
        assert (
            row.retention_rate is None
            and row.avg_order_value_30d is None
            and row.median_days_first_to_second is None
        )


def test_cohort_months_ended_are_written_once_as_of_their_last_day():
    jan, feb, mar = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)
    # first run on 03-10 with orders since January: both ended months, and the open one
    assert cohort_months_to_write(date(2024, 3, 10), True, {}, date(2024, 1, 15)) == {
        jan: date(2024, 1, 31),
        feb: date(2024, 2, 29),
        mar: date(2024, 3, 10),
    }
    stored = {jan: date(2024, 1, 31), feb: date(2024, 2, 29), mar: date(2024, 3, 10)}
    assert cohort_months_to_write(date(2024, 3, 11), True, stored, jan) == {mar: date(2024, 3, 11)}
    # March ended without a run on its last day: computed once as of 03-31 when April opens
    assert cohort_months_to_write(date(2024, 4, 2), True, stored, jan) == {
        mar: date(2024, 3, 31),
        date(2024, 4, 1): date(2024, 4, 2),
    }
    # a backfill of an older date rewrites nothing: the ended months are final, it is not the latest
    assert cohort_months_to_write(date(2024, 3, 11), False, stored, jan) == {}


def test_cohort_rows_by_hand(spark):
    """As of 2024-02-29 (February) and 2024-01-31 (January): c1 first ordered in January and again
    in February, c2 in February; c3 ordered in January, refunded in February (invalid as of 02-29,
    still valid as of 01-31: January stays as computed then)."""
    rows = [
        ("o1", "c1", date(2024, 1, 5), datetime(2024, 1, 5), "completed", Decimal("10.00")),
        ("o2", "c1", date(2024, 2, 3), datetime(2024, 2, 3), "completed", Decimal("20.00")),
        ("o3", "c2", date(2024, 2, 4), datetime(2024, 2, 4), "completed", Decimal("5.00")),
        ("o4", "c3", date(2024, 1, 9), datetime(2024, 1, 9), "completed", Decimal("7.00")),
        ("o4", "c3", date(2024, 1, 9), datetime(2024, 2, 9), "refunded", Decimal("7.00")),
    ]
    schema = "order_id string, customer_id string, order_date date, updated_at timestamp, status string, amount_base decimal(18,2)"
    orders = spark.createDataFrame(rows, schema)
    months = {date(2024, 1, 1): date(2024, 1, 31), date(2024, 2, 1): date(2024, 2, 29)}
    valid = valid_orders_as_of(orders, sorted(months.values()))
    got = {(r.activity_month.month, r.cohort_month.month): r for r in build_cohorts(valid, months).collect()}
    by_hand = {  # (size, active, cumulative revenue, months since first)
        (1, 1): (2, 2, Decimal("17.00"), 0),  # January as of 01-31: c1 and c3, both ordered in January
        (2, 1): (1, 1, Decimal("30.00"), 1),  # February: c3's refund removed it from the cohort
        (2, 2): (1, 1, Decimal("5.00"), 0),
    }
    assert {
        k: (r.cohort_size, r.active_customers, r.cumulative_revenue, r.months_since_first)
        for k, r in got.items()
    } == by_hand
    assert {r.as_of_date for r in got.values()} == {date(2024, 1, 31), date(2024, 2, 29)}


def test_order_facts_carried_on_the_scored_rows_equal_those_joined_from_the_orders(spark, model):
    """The pipeline computes each customer's order facts with its RFM metrics and carries them on
    the scored rows (`snapshot_frames`); a date read back from the lake joins them from the orders
    (`customer_facts`). Both give the same rows (the golden scenarios check that the published
    snapshot does not change).

    Added to the hand-worked orders: c3 orders 5.00 and 7.00 on 01-05 (days to the second order:
    0). As of D0 c1's valid orders are 01-01 and 01-08 (7 days, 150.00), as of D 01-01 and 01-10
    (9 days: 01-08 was refunded on D); c2 has one order (null). A visitor is not among them."""
    same_day = spark.createDataFrame(
        [
            ("o5", "c3", date(2024, 1, 5), datetime(2024, 1, 5, 9), "completed", Decimal("5.00")),
            ("o6", "c3", date(2024, 1, 5), datetime(2024, 1, 5, 18), "placed", Decimal("7.00")),
        ],
        _orders(spark).schema,
    )
    orders = _orders(spark).unionByName(same_day)
    events = spark.createDataFrame(
        [(D, datetime(2024, 1, 10, 8), None, "v9", False)],
        "event_date date, event_time timestamp, customer_id string, anonymous_id string, has_email boolean",
    )
    kept = []  # as the pipeline does: each frame computed once, read again by the checks

    def keep(df):
        kept.append(df.cache())
        return df

    frames = snapshot_frames(Sources(events, orders), [D0, D], SnapshotParams(), model, keep)

    joined = customer_facts(frames.snapshot, frames.valid_orders)
    assert_df_equality(frames.customers, joined, ignore_row_order=True, ignore_nullable=True)
    # (date, revenue_365d) tells the customers apart: c1 150.00 / 80.00, c2 20.00, c3 12.00
    facts = {
        (r.snapshot_date, r.revenue_365d): (
            r.days_to_second,
            r.orders_d,
            r.revenue_d,
            r.orders_30d,
            r.revenue_30d,
        )
        for r in frames.customers.collect()
    }
    assert facts == {
        (D0, Decimal("150.00")): (7, 0, Decimal("0.00"), 2, Decimal("150.00")),
        (D0, Decimal("12.00")): (0, 0, Decimal("0.00"), 2, Decimal("12.00")),
        (D, Decimal("80.00")): (9, 1, Decimal("30.00"), 2, Decimal("80.00")),
        (D, Decimal("20.00")): (None, 1, Decimal("20.00"), 1, Decimal("20.00")),
        (D, Decimal("12.00")): (0, 0, Decimal("0.00"), 2, Decimal("12.00")),
    }
    # anon:v9, a visitor on D, is in the snapshot but not among the customers the KPIs read
    assert frames.snapshot.filter("not is_customer").count() == 1
    assert frames.customers.count() == frames.snapshot.filter("is_customer").count() == 5
    for df in kept:
        df.unpersist()
