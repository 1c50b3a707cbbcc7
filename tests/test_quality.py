"""Quality gate: corrupted gold outputs are caught; nothing is published; the run is recorded."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from helpers import SMALL_DATES, kpis_without_orders, lake_context
from pyspark.sql import functions as F
from test_transitions import D0, D1, _case

from clm_spark import pipeline
from clm_spark.activation.audiences import CONTACT, audience_changes
from clm_spark.app import start_with_deps
from clm_spark.errors import ValidationFailed
from clm_spark.lifecycle.segments import load_segments
from clm_spark.lifecycle.transitions import build_matrix, build_summary, build_transitions, segment_pairs
from clm_spark.quality import load_rules, reconciliation, validate_frames
from clm_spark.tables import CUSTOMER_SNAPSHOT, GOLD_TABLES, PIPELINE_RUNS


@pytest.fixture(scope="module")
def model():
    return load_segments("conf/segments.yaml", 5)


@pytest.fixture(scope="module")
def rules(model):
    return load_rules("conf/expectations.yaml", model)


def _frames(spark, model, current, previous, audience=None):
    pairs = segment_pairs(current, previous, {D1: D0}, carry=CONTACT)
    transitions, matrix = build_transitions(pairs), build_matrix(pairs)
    frames = {
        "gold/lifecycle_kpis": kpis_without_orders(spark, current, previous, {D1: D0}, matrix, model),
        "gold/customer_snapshot": current,
        "gold/segment_transitions": transitions,
        "gold/segment_transition_matrix": matrix,
        "gold/segment_summary": build_summary(spark, current, transitions, [D1], model),
        "gold/audience_changes": audience_changes(pairs) if audience is None else audience,
    }
    return {**frames, "checks/reconciliation": reconciliation(frames, previous, {D1: D0}, pairs, 1)}


def test_clean_outputs_pass(spark, model, rules):
    prev, cur = _case(spark)

    def persisted():
        return set(spark.sparkContext._jsc.getPersistentRDDs().keys())

    before = persisted()
    report = validate_frames(_frames(spark, model, cur, prev), rules)
    assert report.critical_failures == [] and len(report.results) == 43, report.summary()
    assert report.warnings == [], report.summary()
    # the local checkpoint of every frame handed to GX is freed again (compared by RDD id: the
    # cleaner may free earlier tests' RDDs meanwhile, so a count would not say which went away)
    assert persisted() - before == set()


def test_corruptions_are_critical_failures(spark, model, rules):
    prev, cur = _case(spark)
    broken = (
        cur.unionByName(cur.filter("person_id = 'p1'"))  # a duplicated person
        .withColumn("r_score", F.when(F.col("person_id") == "p2", F.lit(9)).otherwise(F.col("r_score")))
        .withColumn("stage", F.when(F.col("person_id") == "p4", F.lit("cherish")).otherwise(F.col("stage")))
    )
    report = validate_frames({"gold/customer_snapshot": broken}, rules)
    failed = {
        (
            r.check.type,
            str(
                r.check.kwargs.get("column")
                or r.check.kwargs.get("column_list")
                or r.check.kwargs.get("column_A")
            ),
        )
        for r in report.critical_failures
    }
    assert failed == {
        ("expect_compound_columns_to_be_unique", "['snapshot_date', 'person_id']"),
        ("expect_column_values_to_be_in_set", "scores_in_range_for_customers"),
        ("expect_column_pair_values_to_be_in_set", "segment"),
    }
    assert report.summary().startswith("failed: ")


@pytest.mark.slow
def test_gate_blocks_publishing_and_records_the_run(spark, small_raw, tmp_path, monkeypatch):
    ctx = lake_context(spark, tmp_path, small_raw, validate=True)
    day = SMALL_DATES[-1]

    real = pipeline.compute_outputs

    def duplicate_a_person(*args, **kwargs):  # corrupts the outputs between compute and gate
        computed = real(*args, **kwargs)
        snap = computed.outputs[CUSTOMER_SNAPSHOT]
        computed.outputs[CUSTOMER_SNAPSHOT] = snap.unionByName(snap.limit(1))
        return computed

    with monkeypatch.context() as patch, pytest.raises(ValidationFailed) as err:
        patch.setattr(pipeline, "compute_outputs", duplicate_a_person)
        start_with_deps(ctx, [day], "run")
    assert err.value.exit_code == 3 and "expect_compound_columns_to_be_unique" in str(err.value)
    assert not any(ctx.lake.exists(t) for t in GOLD_TABLES), "a gold table was written"
    run = ctx.lake.read(PIPELINE_RUNS).collect()[0]
    assert run.status == "failed_validation" and "critical" in run.validation
    report = Path(ctx.cfg.lake.root) / "_reports" / run.run_id / f"validation-{day}.html"
    assert report.is_file() and "FAIL" in report.read_text()

    result = start_with_deps(ctx, [day], "run")
    assert result.validation.startswith(f"{day} passed: ")
    assert ctx.lake.read(CUSTOMER_SNAPSHOT).count() > 0
    statuses = sorted(r.status for r in ctx.lake.read(PIPELINE_RUNS).collect())
    assert statuses == ["failed_validation", "succeeded"]


def test_silver_suites_catch_duplicate_keys_and_bad_money(spark, rules):
    from decimal import Decimal

    from clm_spark.quality import require_passing
    from clm_spark.tables import SILVER_ORDERS

    row = (
        "o1",
        "c1",
        None,
        date(2024, 1, 1),
        None,
        "placed",
        Decimal("1.00"),
        "EUR",
        Decimal("1.00"),
        "f",
        1,
        1,
    )
    good = spark.createDataFrame([row], SILVER_ORDERS.schema)
    assert require_passing({"silver/orders": good}, rules, "test").critical_failures == []
    bad = spark.createDataFrame(
        [row, row, row[:5] + ("shipped",) + row[6:8] + (None,) + row[9:]], SILVER_ORDERS.schema
    )
    with pytest.raises(ValidationFailed, match="silver/orders test: failed"):
        require_passing({"silver/orders": bad}, rules, "test")
