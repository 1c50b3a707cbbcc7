"""Transitions, matrix and summary on hand-built snapshots (SPEC §3, §8.13–8.14)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from chispa import assert_df_equality

from clm_spark.lifecycle.segments import load_segments
from clm_spark.lifecycle.transitions import build_cutpoints, build_matrix, build_summary, build_transitions
from clm_spark.tables import CUSTOMER_SNAPSHOT, SEGMENT_TRANSITION_MATRIX, SEGMENT_TRANSITIONS

D0, D1 = date(2024, 1, 1), date(2024, 1, 2)
STAGE = {
    "champions": "cherish",
    "lost": "reactivate",
    "at_risk": "reactivate",
    "engaged_visitor": "acquire",
    "loyal_visitor": "acquire",
}


def _snap(spark, day, people):
    """people: (person_id, segment, recency, frequency, monetary, r, f, m)."""
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
            )
        )
    return spark.createDataFrame(rows, CUSTOMER_SNAPSHOT.schema)


def _case(spark):
    prev = _snap(
        spark,
        D0,
        [
            ("p1", "champions", 1, 5, "100.00", 5, 5, 5),
            ("p2", "lost", 200, 1, "5.00", 1, 1, 1),
            ("p3", "engaged_visitor", None, 0, "0.00", None, None, None),
        ],
    )
    cur = _snap(
        spark,
        D1,
        [
            ("p1", "champions", 2, 5, "100.00", 5, 5, 5),
            ("p2", "at_risk", 1, 2, "10.01", 2, 5, 5),
            ("p4", "loyal_visitor", None, 0, "0.00", None, None, None),
        ],
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
        build_transitions(cur, prev, D1, D0),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


def test_first_snapshot_everyone_is_new(spark):
    _, cur = _case(spark)
    empty = spark.createDataFrame([], CUSTOMER_SNAPSHOT.schema)
    rows = build_transitions(cur, empty, D1, None).collect()
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
        build_matrix(cur, prev, D1),
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
        for r in build_summary(spark, cur, build_transitions(cur, prev, D1, D0), D1, model).collect()
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
    rows = {(r.dimension, r.score): r for r in build_cutpoints(cur, D1, 5).collect()}
    assert rows[("r", 5)].min_value == Decimal("2.00") and rows[("r", 5)].customers == 1
    assert rows[("f", 5)].customers == 2 and rows[("f", 5)].min_value == Decimal("2.00")
    assert rows[("m", 5)].max_value == Decimal("100.00")
    assert all(r.is_degenerate for r in rows.values())  # 2 customers cannot fill 5 bins
