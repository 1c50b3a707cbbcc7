"""Transitions, matrix and summary on hand-built snapshots (SPEC §3, §8.13–8.14)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from chispa import assert_df_equality
from pyspark.sql import functions as F

from clm_spark.lifecycle.segments import load_segments
from clm_spark.lifecycle.transitions import (
    build_cutpoints,
    build_matrix,
    build_summary,
    build_transitions,
    score_shares,
    segment_pairs,
)
from clm_spark.tables import CUSTOMER_SNAPSHOT, SEGMENT_TRANSITION_MATRIX, SEGMENT_TRANSITIONS

D0, D1 = date(2024, 1, 1), date(2024, 1, 2)
STAGE = {
    "champions": "cherish",
    "lost": "reactivate",
    "at_risk": "reactivate",
    "engaged_visitor": "acquire",
    "loyal_visitor": "acquire",
}


def _snap(spark, day, people, control=()):
    """people: (person_id, segment, recency, frequency, monetary, r, f, m); `control`: held-out ids."""
    rows = []
    for pid, seg, rec, freq, money, r, f, m in people:
        is_cust = rec is not None
        rows.append(
            (
                day,
                pid,
                pid if is_cust else None,
                is_cust,
                False,
                day,
                day,
                None,
                None,
                freq if is_cust else 0,  # orders_lifetime >= frequency
                rec,
                freq,
                Decimal(money),
                None,
                None,
                None,
                r,
                f,
                m,
                f"{r}{f}{m}" if is_cust else None,
                seg,
                seg,
                STAGE[seg],
                pid in control,
                False,
            )
        )
    return spark.createDataFrame(rows, CUSTOMER_SNAPSHOT.schema)


def _case(spark, previous_control=(), control=()):
    """`previous_control`: persons held out on D0; `control`: on D1."""
    prev = _snap(
        spark,
        D0,
        [
            ("p1", "champions", 1, 5, "100.00", 5, 5, 5),
            ("p2", "lost", 200, 1, "5.00", 1, 1, 1),
            ("p3", "engaged_visitor", None, 0, "0.00", None, None, None),
        ],
        control=previous_control,
    )
    cur = _snap(
        spark,
        D1,
        [
            ("p1", "champions", 2, 5, "100.00", 5, 5, 5),
            ("p2", "at_risk", 1, 2, "10.01", 2, 5, 5),
            ("p4", "loyal_visitor", None, 0, "0.00", None, None, None),
        ],
        control=control,
    )
    return prev, cur


def test_transitions_new_left_and_changed(spark):
    prev, cur = _case(spark)
    expected = spark.createDataFrame(
        [
            (D1, D0, "p2", "lost", "at_risk", "reactivate", "reactivate"),
            (D1, D0, "p3", "engaged_visitor", None, "acquire", None),
            (D1, D0, "p4", None, "loyal_visitor", None, "acquire"),
        ],
        SEGMENT_TRANSITIONS.schema,
    )
    assert_df_equality(
        build_transitions(segment_pairs(cur, prev, {D1: D0})),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


def test_first_snapshot_everyone_is_new(spark):
    _, cur = _case(spark)
    empty = spark.createDataFrame([], CUSTOMER_SNAPSHOT.schema)
    rows = build_transitions(segment_pairs(cur, empty, {D1: None})).collect()
    assert {(r.person_id, r.from_segment, r.previous_snapshot_date) for r in rows} == {
        ("p1", None, None),
        ("p2", None, None),
        ("p4", None, None),
    }


def test_matrix_includes_unchanged_new_and_left(spark):
    prev, cur = _case(spark)
    expected = spark.createDataFrame(
        [
            (D1, "champions", "champions", 1),
            (D1, "lost", "at_risk", 1),
            (D1, "engaged_visitor", None, 1),
            (D1, None, "loyal_visitor", 1),
        ],
        SEGMENT_TRANSITION_MATRIX.schema,
    )
    assert_df_equality(
        build_matrix(segment_pairs(cur, prev, {D1: D0})),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


def test_summary_every_segment_with_shares_money_and_movement(spark):
    prev, cur = _case(spark)
    model = load_segments("conf/segments.yaml", 5)
    summary = {
        r.segment: r
        for r in build_summary(
            spark, cur, build_transitions(segment_pairs(cur, prev, {D1: D0})), [D1], model
        ).collect()
    }
    assert len(summary) == 14
    champ, risk, loyal_v = summary["champions"], summary["at_risk"], summary["loyal_visitor"]
    assert (champ.persons, champ.share, champ.entered, champ.left) == (1, 1 / 3, 0, 0)
    assert (risk.persons, risk.entered, risk.avg_recency_days, risk.avg_monetary) == (
        1,
        1,
        1.0,
        Decimal("10.01"),
    )
    assert (loyal_v.persons, loyal_v.entered, loyal_v.avg_recency_days, loyal_v.monetary_total) == (
        1,
        1,
        None,
        Decimal("0.00"),
    )
    assert (summary["lost"].persons, summary["lost"].left, summary["lost"].avg_frequency) == (0, 1, None)
    assert summary["engaged_visitor"].left == 1 and summary["promising"].monetary_total == Decimal("0.00")
    assert sum(r.persons for r in summary.values()) == 3


def test_cutpoints_ranges_and_degenerate_flag(spark):
    _, cur = _case(spark)
    rows = {(r.dimension, r.score): r for r in build_cutpoints(cur, 5).collect()}
    assert rows[("r", 5)].min_value == Decimal("2.00") and rows[("r", 5)].customers == 1
    assert rows[("f", 5)].customers == 2 and rows[("f", 5)].min_value == Decimal("2.00")
    assert rows[("m", 5)].max_value == Decimal("100.00")
    assert all(r.is_degenerate for r in rows.values())  # 2 customers cannot fill 5 bins


def test_several_dates_at_once_equal_each_date_alone(spark):
    """Movement of D1 and D2 in one pass, D2's previous snapshot being D1 of the same batch."""
    prev, cur = _case(spark)
    d2 = date(2024, 1, 3)
    cur2 = _snap(
        spark,
        d2,
        [
            ("p1", "lost", 300, 1, "1.00", 1, 1, 1),
            ("p4", "loyal_visitor", None, 0, "0.00", None, None, None),
            ("p5", "engaged_visitor", None, 0, "0.00", None, None, None),
        ],
    )
    both = cur.unionByName(cur2)
    prev_of = {D1: D0, d2: D1}
    model = load_segments("conf/segments.yaml", 5)
    at_once = build_transitions(segment_pairs(both, prev.unionByName(cur), prev_of))
    alone = build_transitions(segment_pairs(cur, prev, {D1: D0})).unionByName(
        build_transitions(segment_pairs(cur2, cur, {d2: D1}))
    )
    assert_df_equality(at_once, alone, ignore_row_order=True, ignore_nullable=True)
    assert {
        (r.person_id, r.from_segment, r.to_segment)
        for r in at_once.filter(f"snapshot_date = '{d2}'").collect()
    } == {
        ("p1", "champions", "lost"),
        ("p2", "at_risk", None),
        ("p5", None, "engaged_visitor"),
    }
    matrix = build_matrix(segment_pairs(both, prev.unionByName(cur), prev_of))
    assert_df_equality(
        matrix,
        build_matrix(segment_pairs(cur, prev, {D1: D0})).unionByName(
            build_matrix(segment_pairs(cur2, cur, {d2: D1}))
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    summary = build_summary(spark, both, at_once, [D1, d2], model)
    per_date = {
        r.snapshot_date: (r.n, r.persons)
        for r in summary.groupBy("snapshot_date")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("persons").alias("persons"))
        .collect()
    }
    assert per_date == {D1: (14, 3), d2: (14, 3)}
    lost = {r.snapshot_date: r for r in summary.filter("segment = 'lost'").collect()}
    assert (lost[d2].share, lost[d2].entered, lost[D1].left) == (1 / 3, 1, 1)


def test_score_shares_show_every_score_and_the_hollow_ones(spark):
    rows = [  # is_customer, r, f, m
        (True, 1, 1, 1),
        (True, 5, 1, 2),
        (True, 5, 1, 5),
        (True, 3, 5, 5),
        (False, None, None, None),  # visitors are not counted
    ]
    snap = spark.createDataFrame(
        [(D1, c, r, f, m, 10, 1, Decimal("1.00")) for c, r, f, m in rows],
        "snapshot_date date, is_customer boolean, r_score int, f_score int, m_score int, "
        "recency_days int, frequency int, monetary decimal(18,2)",
    )
    shares = score_shares(snap, 5)
    assert shares["r"] == {1: 0.25, 2: 0.0, 3: 0.25, 4: 0.0, 5: 0.5}
    assert shares["f"] == {1: 0.75, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.25}
    assert shares["m"] == {1: 0.25, 2: 0.25, 3: 0.0, 4: 0.0, 5: 0.5}
    assert score_shares(snap.filter("false"), 3)["f"] == {1: 0.0, 2: 0.0, 3: 0.0}
