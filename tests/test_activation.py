"""Activation: the control group, the segment catalog, the audience changes and the export.

Buckets are worked out with the documented formula, int(sha256(salt + ":" + key)[:8], 16) mod
10000; with salt "clm": lost 2618, at_risk 4139, needs_attention 4334, champion 5789,
first_time 7741.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date

import pytest
from chispa import assert_df_equality
from helpers import kpis_without_orders, lake_context
from pyspark.sql import functions as F
from test_transitions import D0, D1, _case, _snap

from clm_spark import cli
from clm_spark.activation.audiences import CONTACT, audience_changes, segment_catalog
from clm_spark.activation.control import bucket, bucket_column, control_columns, in_control
from clm_spark.app import export_with_deps
from clm_spark.errors import ClmError, ConfigError, SegmentRulesError
from clm_spark.lifecycle.segments import load_segments, parse_model
from clm_spark.lifecycle.transitions import build_matrix, build_summary, build_transitions, segment_pairs
from clm_spark.quality import load_rules, reconciliation, validate_frames
from clm_spark.tables import (
    AUDIENCE_CHANGES,
    CUSTOMER_SNAPSHOT,
    LIFECYCLE_KPIS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
    SEGMENT_TRANSITIONS,
)


def _hex_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def test_the_bucket_formula_as_documented():
    digest = hashlib.sha256(b"clm:lost").hexdigest()
    assert bucket("clm", "lost") == int(digest[:8], 16) % 10_000 == 2618
    assert bucket("other", "lost") != 2618  # the salt draws another group


def test_spark_and_python_give_the_same_bucket_on_20k_keys(spark):
    keys = (
        [f"c{i}" for i in range(19_990)] + ["anon:é-ü", "anon:a b", "x" * 300, "0", "anon:"] + list("ABCDE")
    )
    expected = spark.createDataFrame([(k, bucket("s1", k)) for k in keys], "key string, b int")
    differ = expected.filter(~F.col("b").eqNullSafe(bucket_column("s1", F.col("key"))))
    assert expected.count() == 20_000 and differ.count() == 0


def test_the_share_is_binomial_and_raising_it_only_adds_people():
    keys = [f"c{i}" for i in range(20_000)]
    five = {k for k in keys if in_control("clm", 0.05, k)}
    ten = {k for k in keys if in_control("clm", 0.10, k)}
    assert five < ten
    assert abs(len(five) - 1000) <= 4 * math.sqrt(20_000 * 0.05 * 0.95)
    assert not {k for k in keys if in_control("clm", 0.0, k)}


def test_control_and_mixed_flags_hand_worked(spark):
    # share 0.45: buckets below 4500 are held out; linked = buckets of merged visitor keys
    rows = [
        ("lost", None, None),  # 2618: control, nothing merged
        ("first_time", 4446, 4446),  # 7741: not control, merged a held-out key: mixed
        ("champion", 5000, 9000),  # 5789: not control, merged keys all above the line
        ("at_risk", 100, 4499),  # 4139: control, merged keys all below the line
        ("needs_attention", 10, 4500),  # 4334: control, one merged key above it: mixed
    ]
    df = spark.createDataFrame(rows, "person_id string, lo int, hi int")
    got = df.select("person_id", *control_columns("clm", 0.45, F.col("lo"), F.col("hi")))
    expected = spark.createDataFrame(
        [
            ("lost", True, False),
            ("first_time", False, True),
            ("champion", False, False),
            ("at_risk", True, False),
            ("needs_attention", True, True),
        ],
        "person_id string, is_control boolean, control_mixed boolean",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_audience_changes_carry_contact_and_control_of_the_right_date(spark):
    prev, cur = _case(spark, previous_control=("p3",))  # p3 leaves: its flag comes from D0
    got = audience_changes(segment_pairs(cur, prev, {D1: D0}, carry=CONTACT))
    expected = spark.createDataFrame(
        [
            (D1, D0, _hex_id(str(D1), "p2", "lost", "at_risk"), "moved", "p2", "p2", False, False, False)
            + ("lost", "at_risk", "reactivate", "reactivate"),
            (D1, D0, _hex_id(str(D1), "p3", "engaged_visitor", ""), "left", "p3", None, False, True, False)
            + ("engaged_visitor", None, "acquire", None),
            (D1, D0, _hex_id(str(D1), "p4", "", "loyal_visitor"), "entered", "p4", None, False, False, False)
            + (None, "loyal_visitor", None, "acquire"),
        ],
        AUDIENCE_CHANGES.schema,
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)


def _gate(spark, prev, cur, audience=None):
    model = load_segments("conf/segments.yaml", 5)
    pairs = segment_pairs(cur, prev, {D1: D0}, carry=CONTACT)
    transitions, matrix = build_transitions(pairs), build_matrix(pairs)
    outputs = {
        CUSTOMER_SNAPSHOT: cur,
        SEGMENT_SUMMARY: build_summary(spark, cur, transitions, [D1], model),
        SEGMENT_TRANSITION_MATRIX: matrix,
        SEGMENT_TRANSITIONS: transitions,
        AUDIENCE_CHANGES: audience_changes(pairs) if audience is None else audience,
        LIFECYCLE_KPIS: kpis_without_orders(spark, cur, prev, {D1: D0}, matrix, model),
    }
    check = reconciliation({s.name: df for s, df in outputs.items()}, prev, {D1: D0}, pairs, 1)
    report = validate_frames({"checks/reconciliation": check}, load_rules("conf/expectations.yaml", model))
    return {r.check.kwargs["column"] for r in report.critical_failures}, {
        r.check.kwargs["column"] for r in report.warnings
    }


def test_the_gate_catches_a_control_flag_that_moves_and_an_audience_row_lost(spark):
    prev, held = _case(spark, previous_control=("p1",), control=("p1",))
    assert _gate(spark, prev, held) == (set(), set())
    # p1 left the control group (critical), p2 joined it as a raised share does (a warning) and the
    # leaver p3's audience row is lost (critical): each is its own check of the reconciliation row,
    # so one gate shows all three
    _, flipped = _case(spark, previous_control=("p1",), control=("p2",))
    full = audience_changes(segment_pairs(flipped, prev, {D1: D0}, carry=CONTACT))
    lost = full.filter("person_id <> 'p3'")
    assert _gate(spark, prev, flipped, lost) == (
        {"control_flag_kept", "audience_is_transitions"},
        {"control_unchanged"},
    )


def test_segment_catalog_is_the_rules_and_their_playbooks(spark):
    model = load_segments("conf/segments.yaml", 5)
    rows = {r.segment: r for r in segment_catalog(spark, model).collect()}
    assert len(rows) == 14 and sorted(r.position for r in rows.values()) == list(range(1, 15))
    lose = rows["cant_lose_them"]
    assert (lose.priority, lose.stage, lose.rules_version) == (1, "reactivate", model.version)
    assert "win_back" in lose.campaigns.split(",") and '"114"' in lose.rule
    assert rows["first_time_customer"].campaigns == "welcome,second_purchase_incentive"
    assert load_segments("conf/segments.yaml", 5).version == model.version  # same rules, same version


def test_playbook_keys_are_validated_in_one_line():
    base = {"id": "visitors", "stage": "acquire", "when": {"is_customer": False}}
    visitors_and_customers = [base, {"id": "rest", "stage": "retain", "ranges": {}}]
    ok = parse_model({"segments": visitors_and_customers})
    changed = parse_model({"segments": [{**base, "goal": "more"}, visitors_and_customers[1]]})
    assert ok.version != changed.version and changed.rules[0].playbook.goal == "more"
    for bad, message in (
        ({"owner": "me"}, "unknown key 'owner'"),
        ({"priority": 0}, "priority: expected an integer >= 1"),
        ({"channels": "email"}, "channels: expected a list of names"),
    ):
        with pytest.raises(SegmentRulesError, match=message) as err:
            parse_model({"segments": [{**base, **bad}, visitors_and_customers[1]]})
        assert "\n" not in str(err.value)


def _published_lake(spark, tmp_path):
    """A lake holding one published date: p1 (held out) and p2 in champions, p3 a visitor."""
    ctx = lake_context(spark, tmp_path, tmp_path / "raw")
    people = [
        ("p1", "champions", 1, 5, "100.00", 5, 5, 5),
        ("p2", "champions", 2, 5, "90.00", 5, 5, 5),
        ("p3", "engaged_visitor", None, 0, "0.00", None, None, None),
    ]
    ctx.lake.overwrite(
        CUSTOMER_SNAPSHOT,
        _snap(spark, D1, people, control=("p1",)),
        replace={"snapshot_date": [D1]},
        run_id="t",
    )
    summary = spark.createDataFrame(
        [(D1, "champions", "Champions", "cherish", 2, 1.0, None, None, None, None, 0, 0)],
        SEGMENT_SUMMARY.schema,
    )
    ctx.lake.overwrite(SEGMENT_SUMMARY, summary, replace={"snapshot_date": [D1]}, run_id="t")
    return ctx


def test_export_leaves_the_control_group_out_and_says_so(spark, tmp_path):
    ctx = _published_lake(spark, tmp_path)
    out = str(tmp_path / "champions")
    result = export_with_deps(ctx, D1, "champions", "csv", out, include_control=False)
    assert (result.persons, result.control_left_out, result.segment_persons) == (1, 1, 2)
    written = spark.read.csv(out, header=True)
    assert [r.person_id for r in written.collect()] == ["p2"] and written.first().is_control == "false"

    everyone = export_with_deps(ctx, D1, "champions", "parquet", out + "-all", include_control=True)
    assert (everyone.persons, everyone.control_left_out) == (2, 0)
    rows = spark.read.parquet(out + "-all").orderBy("person_id").collect()
    assert [(r.person_id, r.is_control) for r in rows] == [("p1", True), ("p2", False)]

    with pytest.raises(ClmError, match="exists already"):
        export_with_deps(ctx, D1, "champions", "csv", out, include_control=False)
    with pytest.raises(ClmError, match="not published"):
        export_with_deps(ctx, date(2030, 1, 1), "champions", "csv", out + "-x", include_control=False)
    with pytest.raises(ConfigError, match="unknown segment 'vip'"):
        export_with_deps(ctx, D1, "vip", "csv", out + "-y", include_control=False)


def test_export_cli_prints_what_it_left_out(spark, tmp_path, capsys):
    ctx = _published_lake(spark, tmp_path)
    config = ctx.cfg.source
    out = str(tmp_path / "cli-out")
    assert (
        cli.main(["export", "--config", config, "--date", str(D1), "--segment", "champions", "--out", out])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"exported 1 of 2 persons of champions on {D1}" in printed
    assert "1 control-group persons left out (--include-control keeps them)" in printed
    assert (
        cli.main(["export", "--config", config, "--date", str(D1), "--segment", "vip", "--out", out + "2"])
        == 2
    )
    assert capsys.readouterr().err.strip().startswith("clm: error: --segment: unknown segment 'vip'")
