"""BG/NBD and Gamma-Gamma: the published CDNOW figures, parameter recovery, and predictions in Spark.

The CDNOW 1/10 sample (../shared/data/cdnow, Fader and Hardie) with a 39-week calibration ending
1997-09-30, weeks as the unit, must give the published estimates (Fader, Hardie and Lee 2005).
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from clm_spark.predict.clv import ClvParams, calibration_stats, fit, predictions
from clm_spark.predict.models import (
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
)

CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_sample.txt"
END = date(1997, 9, 30)
WEEKS = ClvParams(unit_days=7, horizon_days=39 * 7)
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_SPEND = {"p": 6.25, "q": 3.74, "gamma": 15.44}
ORDERS = "snapshot_date date, customer_id string, order_date date, amount_base decimal(18,2)"


@pytest.fixture(scope="module")
def cdnow_stats(spark):
    if not CDNOW.is_file():
        pytest.skip(f"CDNOW sample not found at {CDNOW} (../shared/data absent)")
    rows = []
    for line in CDNOW.read_text().splitlines():
        _, customer, ymd, _, dollars = line.split()
        day = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]))
        if day <= END:  # the calibration period
            rows.append((END, customer, day, Decimal(dollars)))
    return calibration_stats(spark.createDataFrame(rows, ORDERS)).cache()


def _close(actual: dict, expected: dict, tol: float) -> bool:
    return all(abs(actual[k] - v) <= tol for k, v in expected.items())


def test_cdnow_reproduces_the_published_bgnbd_and_gamma_gamma_fits(cdnow_stats):
    model = fit(cdnow_stats, END, WEEKS)
    assert model.reason is None
    assert model.purchases.customers == 2357 and model.purchases.patterns < 2357
    assert _close(model.purchases.params, PUBLISHED, 1e-3), model.purchases.params
    assert model.purchases.loglik == pytest.approx(-9582.4, abs=0.1)
    assert model.spend.customers == 946
    assert _close(model.spend.params, PUBLISHED_SPEND, 1e-2), model.spend.params


def test_the_weighted_pattern_fit_equals_the_per_customer_fit(cdnow_stats):
    """Test-only collect of 2,357 customers: the product fits on patterns alone."""
    rows = cdnow_stats.collect()
    x = [r.x for r in rows]
    per_customer = fit_bgnbd(x, [r.t_x_days / 7 for r in rows], [r.T_days / 7 for r in rows], np.ones(len(x)))
    patterns = fit(cdnow_stats, END, WEEKS).purchases
    assert _close(per_customer.params, PUBLISHED, 1e-3)
    assert per_customer.loglik == pytest.approx(patterns.loglik, abs=1e-6)
    assert _close(per_customer.params, patterns.params, 5e-4)  # a flat optimum: same loglik
    repeat = [r for r in rows if r.x > 0]
    spend = fit_gamma_gamma([r.x for r in repeat], [float(r.m_x) for r in repeat], np.ones(len(repeat)))
    assert _close(spend.params, PUBLISHED_SPEND, 1e-2)
    # unweighted patterns (each distinct pattern once) are a different likelihood
    distinct = Counter((r.x, r.t_x_days, r.T_days) for r in rows)
    keys = list(distinct)
    unweighted = fit_bgnbd(
        [k[0] for k in keys], [k[1] / 7 for k in keys], [k[2] / 7 for k in keys], np.ones(len(keys))
    )
    assert not _close(unweighted.params, PUBLISHED, 1e-2)


def test_published_conditional_expectation_of_a_cdnow_customer():
    """Fader, Hardie and Lee (2005): x = 2, t_x = 30.43, T = 38.86 weeks expects 1.226 purchases
    in the next 39 weeks under the published parameters."""
    params = {"r": 0.242594, "alpha": 4.413602, "a": 0.792922, "b": 2.425906}
    assert expected_purchases(params, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)
    assert p_alive(params, 0, 0, 38.86) == 1.0  # no repeat purchase: never seen dropping out


def _simulate(rng, n, r, alpha, a, b, horizon):
    """Customers of a BG/NBD world: (x, t_x, T) with T uniform in [horizon/2, horizon]."""
    lam = rng.gamma(r, 1 / alpha, n)
    drop = rng.beta(a, b, n)
    T = rng.uniform(horizon / 2, horizon, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < drop[i]:
                break
    return x, t_x, T


def test_parameters_are_recovered_from_simulated_customers():
    truth = {"r": 0.6, "alpha": 5.0, "a": 0.9, "b": 3.0}
    x, t_x, T = _simulate(np.random.default_rng(7), 20_000, *truth.values(), horizon=60.0)
    fitted = fit_bgnbd(x, t_x, T, np.ones(len(x)))
    assert fitted.converged
    for k, v in truth.items():
        assert fitted.params[k] == pytest.approx(v, rel=0.15), (k, fitted.params)
    # the log-scale likelihood stays finite for ages and counts in the thousands
    big = fit_bgnbd(x * 50, t_x * 100, T * 100, np.ones(len(x)))
    assert np.isfinite(big.loglik) and all(np.isfinite(list(big.params.values())))


def test_predictions_join_pattern_values_back_and_rank_churn_risk(spark):
    """Six customers as of 2024-03-31, each day's orders summed: the expected values are the
    per-customer closed forms; x = 0 gets P(alive) = 1 and the population spend."""
    day = date(2024, 3, 31)
    orders = [
        ("c1", date(2024, 1, 1), "10.00"),
        ("c1", date(2024, 1, 1), "5.00"),  # same day: one transaction of 15
        ("c1", date(2024, 2, 1), "30.00"),
        ("c1", date(2024, 3, 1), "50.00"),
        ("c2", date(2023, 6, 1), "20.00"),
        ("c2", date(2023, 7, 1), "40.00"),
        ("c3", date(2024, 3, 30), "99.00"),
        ("c4", date(2023, 1, 1), "10.00"),
        ("c4", date(2024, 3, 31), "20.00"),
        ("c5", date(2024, 2, 10), "15.00"),
        ("c5", date(2024, 2, 20), "25.00"),
        ("c6", date(2023, 9, 9), "60.00"),
    ]
    frame = spark.createDataFrame([(day, c, d, Decimal(v)) for c, d, v in orders], ORDERS)
    stats = calibration_stats(frame)
    got = {r.person_id: r for r in stats.collect()}
    assert (got["c1"].x, got["c1"].t_x_days, got["c1"].T_days, got["c1"].m_x) == (2, 60, 90, Decimal("40.00"))
    assert (got["c3"].x, got["c3"].m_x) == (0, None)

    model = fit(stats, day, ClvParams(min_repeat_buyers=1))
    assert model.purchases is not None
    out = {r.person_id: r for r in predictions(stats, model, ClvParams(min_repeat_buyers=1)).collect()}
    assert set(out) == set(got)
    for person, r in out.items():
        s = got[person]
        assert r.p_alive == pytest.approx(float(p_alive(model.purchases.params, s.x, s.t_x_days, s.T_days)))
        expected = expected_purchases(model.purchases.params, 365, s.x, s.t_x_days, s.T_days)
        assert r.expected_purchases == pytest.approx(float(expected))
        if model.spend is not None:
            spend = expected_spend(model.spend.params, s.x, float(s.m_x or 0))
            assert float(r.predicted_order_value) == pytest.approx(float(spend), abs=0.005)
            assert float(r.predicted_clv) == pytest.approx(
                float(expected) * float(r.predicted_order_value), abs=0.01
            )
    assert out["c3"].p_alive == 1.0
    # risk = 1 - P(alive): those never seen to repeat share the lowest risk decile
    assert {out[c].churn_risk_decile for c in ("c3", "c6")} == {1}
    riskiest = max(out.values(), key=lambda r: 1 - r.p_alive)
    assert riskiest.churn_risk_decile == 10


def test_a_degenerate_population_records_the_reason_and_predicts_nothing(spark):
    day = date(2024, 3, 31)
    frame = spark.createDataFrame([(day, "c1", date(2024, 3, 1), Decimal("5.00"))], ORDERS)
    stats = calibration_stats(frame)
    model = fit(stats, day, ClvParams())
    assert model.purchases is None and "0 repeat buyers" in model.reason
    assert predictions(stats, model, ClvParams()).count() == 0
    assert fit(stats.filter(F.lit(False)), day, ClvParams()).reason == "no customers"


@pytest.mark.slow
def test_a_run_with_predictions_publishes_them_gated_and_reconciled(spark, tmp_path):
    """predict.enabled: each published date gets its model row and one prediction per customer,
    validated by the gate; a date without enough repeat buyers records why and predicts nothing."""
    from dataclasses import replace

    from helpers import lake_context

    from clm_spark.app import start_with_deps
    from clm_spark.config import PredictConfig
    from clm_spark.errors import ClmError
    from clm_spark.sample.generate import generate
    from clm_spark.tables import CLV_MODEL, CUSTOMER_PREDICTIONS, CUSTOMER_SNAPSHOT, PIPELINE_RUNS

    start = date(2024, 1, 1)
    generate(tmp_path / "raw", persons=400, days=40, start=start, seed=3, bad_rate=0.0)
    ctx = lake_context(spark, tmp_path, tmp_path / "raw", "lake", validate=True)
    ctx = replace(ctx, cfg=replace(ctx.cfg, predict=PredictConfig(enabled=True, min_repeat_buyers=5)))
    first, later = date(2024, 1, 2), date(2024, 2, 9)
    result = start_with_deps(ctx, [first, later], "backfill")
    assert "passed" in result.validation

    models = {r.snapshot_date: r for r in ctx.lake.read(CLV_MODEL).collect()}
    assert set(models) == {first, later}
    assert models[first].status == "not_fitted" and "repeat buyers" in models[first].reason
    fitted = models[later]
    assert fitted.status == "fitted" and fitted.reason is None, fitted
    assert fitted.r > 0 and fitted.alpha > 0 and fitted.a > 0 and fitted.b > 0 and fitted.p > 0
    assert fitted.purchase_patterns <= fitted.customers

    predicted = ctx.lake.read(CUSTOMER_PREDICTIONS)
    customers = ctx.lake.read(CUSTOMER_SNAPSHOT).filter("is_customer")
    assert predicted.filter(F.col("snapshot_date") == first).count() == 0
    mine = predicted.filter(F.col("snapshot_date") == later).select("person_id")
    theirs = customers.filter(F.col("snapshot_date") == later).select("person_id")
    assert mine.count() == theirs.count() == fitted.customers
    assert mine.subtract(theirs).count() == 0
    deciles = {r[0] for r in predicted.select("churn_risk_decile").distinct().collect()}
    assert deciles <= set(range(1, 11)) and 1 in deciles
    # holdout: fit as of 2024-01-20, compare with the 20 days after; recorded on that date's row
    from clm_spark.app import predict_eval_with_deps

    evaluated = predict_eval_with_deps(ctx, date(2024, 1, 20), 20)
    h = evaluated.holdout
    assert h.customers == evaluated.fit.purchases.customers and h.actual > 0
    [row] = ctx.lake.read(CLV_MODEL).filter(F.col("snapshot_date") == date(2024, 1, 20)).collect()
    assert (row.holdout_days, row.holdout_actual) == (20, h.actual)
    assert row.holdout_relative_error == pytest.approx(abs(h.predicted - h.actual) / h.actual)
    assert row.parameter_drift is None  # no fit before it (2024-01-02 was not fitted)
    with pytest.raises(ClmError, match="after the latest order date"):
        predict_eval_with_deps(ctx, later, 20)
    # the HTML report shows the fits and the latest holdout
    from clm_spark.app import write_report

    page = Path(write_report(ctx.cfg, str(tmp_path / "report.html"), ctx.lake)).read_text()
    assert "Predicted value: BG/NBD and Gamma-Gamma fits" in page and "Holdout of 2024-01-20: 20 days" in page
    assert f"/ {h.actual:,}</td>" in page  # the date's predicted / actual order days
    [run] = ctx.lake.read(PIPELINE_RUNS).collect()
    versions = __import__("json").loads(run.table_versions)
    assert CUSTOMER_PREDICTIONS.name in versions and CLV_MODEL.name in versions


def test_cdnow_holdout_compares_39_weeks_of_predicted_and_actual_purchases(spark, cdnow_stats):
    """Calibration to 1997-09-30, holdout the next 39 weeks (to 1998-06-30): 1,653 order days
    predicted for 1,882 bought (-12%, the model's known under-prediction for light repeat buyers
    on CDNOW); the buckets add up to the totals."""
    from clm_spark.predict.clv import holdout

    rows = []
    for line in CDNOW.read_text().splitlines():
        _, customer, ymd, _, dollars = line.split()
        rows.append(
            (date(1998, 6, 30), customer, date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:])), Decimal(dollars))
        )
    later = spark.createDataFrame(rows, ORDERS)
    model = fit(cdnow_stats, END, WEEKS)
    h = holdout(cdnow_stats, model, later, 39 * 7, WEEKS)
    assert h.customers == 2357 and [b["x"] for b in h.by_frequency] == list(range(8))
    assert sum(b["actual"] for b in h.by_frequency) == h.actual
    assert sum(b["predicted"] for b in h.by_frequency) == pytest.approx(h.predicted, abs=0.01)
    assert h.actual == 1882 and h.predicted == pytest.approx(1653.4, abs=0.5)
    assert h.relative_error < 0.15


def test_predict_eval_refuses_a_bad_holdout_before_any_work(capsys):
    from clm_spark.cli import main

    code = main(
        [
            "predict-eval",
            "--calibration-end",
            "2024-01-20",
            "--holdout-days",
            "0",
            "--config",
            "conf/clm.yaml",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == ["clm: error: --holdout-days must be >= 1, got 0"]


def test_the_fit_is_identical_whatever_the_partitioning(cdnow_stats):
    """Patterns reach the optimiser in key order: the same input gives bit-identical estimates."""
    one = fit(cdnow_stats, END, WEEKS)
    other = fit(cdnow_stats.repartition(7, "person_id"), END, WEEKS)
    assert one.purchases.params == other.purchases.params and one.spend.params == other.spend.params
    assert one.purchases.loglik == other.purchases.loglik
