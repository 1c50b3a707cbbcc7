"""Predicted lifetime value and churn risk per customer: statistics in Spark, fit on patterns.

1. `calibration_stats`: per snapshot date and customer, from the valid orders of that date
   (`lifecycle.snapshot.valid_orders_as_of`): x = distinct order days − 1, t_x = first to last
   order day, T = first order day to D (whole days), m_x = mean value of the repeat order days.
2. `bgnbd_patterns` / `spend_patterns`: the distinct (x, t_x, T) and (x, m_x) with their counts.
   Only these reach the driver. Their number is bounded by the history, not by the customers:
   T ≤ H days of history and t_x ≤ T give at most (H + 1)(H + 2)/2 (t_x, T) pairs per x, and
   never more than the customers (the bench's 52,416 customers over 120 days give 21,012).
   `max_patterns` refuses a fit above the bound instead of filling the driver.
3. `fit`: weighted maximum likelihood (`models`), in the configured time unit.
4. `predictions`: P(alive) and expected purchases per pattern (the hypergeometric function
   has no Spark built-in, so they are computed once per pattern and joined back, never per
   customer in Python), spend and CLV as Spark column expressions, and the churn-risk decile
   from the exact distributed percentiles (no window over all customers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date
from functools import reduce

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from clm_spark.lifecycle.percentiles import with_percentiles
from clm_spark.predict.models import (
    BGNBD_PARAMS,
    GG_PARAMS,
    Fit,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
)
from clm_spark.tables import CLV_MODEL, FREQUENCY_CAP

MONEY = "decimal(18,2)"


@dataclass(frozen=True)
class ClvParams:
    unit_days: float = 1.0  # the model's time unit (7 for weeks)
    horizon_days: int = 365  # predictions cover (D, D + horizon]
    max_patterns: int = 2_000_000  # the driver's bound: refuse a fit above it
    min_repeat_buyers: int = 10  # fewer: the population is degenerate, no fit

    @classmethod
    def of(cls, predict) -> ClvParams:
        """From the `predict` section of the config."""
        return cls(predict.unit_days, predict.horizon_days, predict.max_patterns, predict.min_repeat_buyers)


@dataclass(frozen=True)
class ClvFit:
    """Both models of one date; a model is None when it was not fitted (see `reason`)."""

    snapshot_date: date
    purchases: Fit | None
    spend: Fit | None
    reason: str | None
    # the (x, t_x, T) patterns the BG/NBD fit used, kept for the per-pattern predictions
    patterns: list = field(default_factory=list, repr=False, compare=False)


def calibration_stats(valid_orders: DataFrame) -> DataFrame:
    """One row per (snapshot_date, person_id) with x, t_x_days, T_days, m_x (null when x = 0)."""
    per_day = valid_orders.groupBy("snapshot_date", "customer_id", "order_date").agg(
        F.sum("amount_base").alias("value")
    )
    per_person = per_day.groupBy("snapshot_date", F.col("customer_id").alias("person_id")).agg(
        F.count(F.lit(1)).alias("days"),
        F.min("order_date").alias("first"),
        F.max("order_date").alias("last"),
        F.sum("value").alias("total"),
        F.min_by("value", "order_date").alias("first_value"),
    )
    x = F.col("days") - 1
    return per_person.select(
        "snapshot_date",
        "person_id",
        x.cast("int").alias("x"),
        F.datediff("last", "first").alias("t_x_days"),
        F.datediff("snapshot_date", "first").alias("T_days"),
        F.when(x > 0, ((F.col("total") - F.col("first_value")) / x).cast(MONEY)).alias("m_x"),
    )


def bgnbd_patterns(stats: DataFrame) -> DataFrame:
    return stats.groupBy("snapshot_date", "x", "t_x_days", "T_days").agg(F.count(F.lit(1)).alias("n"))


def spend_patterns(stats: DataFrame) -> DataFrame:
    repeat = stats.filter((F.col("x") > 0) & (F.col("m_x") > 0))
    return repeat.groupBy("snapshot_date", "x", "m_x").agg(F.count(F.lit(1)).alias("n"))


def _collect_bounded(patterns: DataFrame, limit: int) -> list | None:
    """The patterns in key order (the fit then sums in the same order whatever the partitioning:
    the same input gives the same estimates to the last bit), or None above `limit`."""
    rows = patterns.limit(limit + 1).collect()
    return None if len(rows) > limit else sorted(rows, key=lambda r: tuple(r[:-1]))


def fit(stats: DataFrame, day: date, params: ClvParams) -> ClvFit:
    """Fit both models on the patterns of `day`; never raises for the population's sake."""
    of_day = stats.filter(F.col("snapshot_date") == F.lit(day))
    purchase_rows = _collect_bounded(bgnbd_patterns(of_day), params.max_patterns)
    if purchase_rows is None:
        return ClvFit(day, None, None, f"more than {params.max_patterns} purchase patterns")
    if not purchase_rows:
        return ClvFit(day, None, None, "no customers")
    x = np.array([r.x for r in purchase_rows], dtype=float)
    weights = np.array([r.n for r in purchase_rows], dtype=float)
    repeat_buyers = int(weights[x > 0].sum())
    if repeat_buyers < params.min_repeat_buyers:
        return ClvFit(day, None, None, f"{repeat_buyers} repeat buyers (< {params.min_repeat_buyers})")
    unit = params.unit_days
    t_x = np.array([r.t_x_days for r in purchase_rows], dtype=float) / unit
    T = np.array([r.T_days for r in purchase_rows], dtype=float) / unit
    try:
        purchases = fit_bgnbd(x, t_x, T, weights)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:  # never crash the run
        return ClvFit(day, None, None, f"BG/NBD fit failed: {type(exc).__name__}: {exc}")
    spend_rows = _collect_bounded(spend_patterns(of_day), params.max_patterns)
    spend = None
    if spend_rows:
        try:
            spend = fit_gamma_gamma(
                [r.x for r in spend_rows], [float(r.m_x) for r in spend_rows], [r.n for r in spend_rows]
            )
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            reason = f"Gamma-Gamma fit failed: {type(exc).__name__}: {exc}"
            return ClvFit(day, purchases, None, reason, purchase_rows)
    if spend is not None and spend.params["q"] <= 1:  # no finite mean spend: not usable
        reason = f"Gamma-Gamma q = {spend.params['q']:.3g} <= 1 (no finite mean)"
        return ClvFit(day, purchases, None, reason, purchase_rows)
    reasons = [
        f"{name} did not converge: {f.message}"
        for name, f in (("BG/NBD", purchases), ("Gamma-Gamma", spend))
        if f is not None and not f.converged
    ]
    if spend_rows is None:
        reasons.append(f"more than {params.max_patterns} spend patterns")
    return ClvFit(day, purchases, spend, "; ".join(reasons) or None, purchase_rows)


def _with_pattern_values(of_day: DataFrame, model: ClvFit, params: ClvParams) -> DataFrame:
    """The customers of the fitted date with p_alive and expected_purchases over the horizon,
    computed once per pattern the fit collected and joined back (broadcast)."""
    lookup = _per_pattern(of_day.sparkSession, model.patterns, model.purchases, params)
    return of_day.join(F.broadcast(lookup), ["x", "t_x_days", "T_days"], "left")


def _per_pattern(spark, rows, purchases: Fit, params: ClvParams) -> DataFrame:
    x = np.array([r.x for r in rows], dtype=float)
    t_x = np.array([r.t_x_days for r in rows], dtype=float) / params.unit_days
    T = np.array([r.T_days for r in rows], dtype=float) / params.unit_days
    alive = p_alive(purchases.params, x, t_x, T)
    expected = expected_purchases(purchases.params, params.horizon_days / params.unit_days, x, t_x, T)
    data = [
        (int(r.x), int(r.t_x_days), int(r.T_days), float(a), float(e))
        for r, a, e in zip(rows, alive, expected, strict=True)
    ]
    schema = "x int, t_x_days int, T_days int, p_alive double, expected_purchases double"
    return spark.createDataFrame(data, schema)


def _spend(spend: Fit | None) -> Column:
    if spend is None:
        return F.lit(None).cast(MONEY)
    p, q, g = spend.params["p"], spend.params["q"], spend.params["gamma"]
    population = F.lit(p * g / (q - 1))
    weight = F.lit(p) * F.col("x") / (F.lit(p) * F.col("x") + F.lit(q - 1))
    repeat = (1 - weight) * population + weight * F.col("m_x").cast("double")
    return F.round(F.when(F.col("x") > 0, repeat).otherwise(population), 2).cast(MONEY)


def predictions(stats: DataFrame, model: ClvFit, params: ClvParams) -> DataFrame:
    """`gold/customer_predictions` rows of the fitted date (empty when BG/NBD was not fitted)."""
    of_day = stats.filter(F.col("snapshot_date") == F.lit(model.snapshot_date))
    if model.purchases is None:
        return of_day.limit(0).select(*_columns(of_day, F.lit(None), F.lit(None), F.lit(None)))
    joined = _with_pattern_values(of_day, model, params)
    spend = _spend(model.spend)
    ranked = with_percentiles(
        joined.withColumn("_risk", 1 - F.col("p_alive")), {"_risk": "_risk_pct"}, by="snapshot_date"
    )
    decile = F.least(F.lit(10), (F.floor(F.col("_risk_pct") * 10) + 1).cast("int"))
    return ranked.select(*_columns(ranked, spend, decile, F.col("expected_purchases")))


def _columns(df: DataFrame, spend: Column, decile: Column, expected: Column) -> list[Column]:
    clv = (expected * spend.cast("double")).cast("double")
    return [
        F.col("snapshot_date"),
        F.col("person_id"),
        F.col("x").alias("repeat_purchases"),
        F.col("t_x_days").alias("first_to_last_order_days"),
        F.col("T_days").alias("first_order_age_days"),
        F.col("m_x").alias("avg_repeat_value"),
        (F.col("p_alive") if "p_alive" in df.columns else F.lit(None)).cast("double").alias("p_alive"),
        expected.cast("double").alias("expected_purchases"),
        spend.cast(MONEY).alias("predicted_order_value"),
        F.round(clv, 2).cast(MONEY).alias("predicted_clv"),
        decile.cast("int").alias("churn_risk_decile"),
    ]


@dataclass(frozen=True)
class Holdout:
    """Predicted vs actual order days in (D, D + days] for the customers of D."""

    days: int
    customers: int
    predicted: float
    actual: int
    by_frequency: list[dict]  # {x, customers, predicted, actual}; x = FREQUENCY_CAP means "or more"

    @property
    def relative_error(self) -> float | None:
        return abs(self.predicted - self.actual) / self.actual if self.actual else None


def holdout(
    stats: DataFrame, model: ClvFit, later_orders: DataFrame, days: int, params: ClvParams
) -> Holdout:
    """Compare the fit of D with what its customers bought in the `days` after D.

    `later_orders`: valid orders as of D + days (customer_id, order_date); only order days in
    (D, D + days] of customers of D count, as the model predicts them.
    """
    day = model.snapshot_date
    of_day = stats.filter(F.col("snapshot_date") == F.lit(day))
    window = (F.col("order_date") > F.lit(day)) & (F.col("order_date") <= F.date_add(F.lit(day), days))
    actual = (
        later_orders.filter(window)
        .groupBy(F.col("customer_id").alias("person_id"))
        .agg(F.countDistinct("order_date").alias("actual"))
    )
    predicted = _with_pattern_values(of_day, model, replace(params, horizon_days=days))
    joined = predicted.join(actual, "person_id", "left")
    buckets = (
        joined.groupBy(F.least(F.col("x"), F.lit(FREQUENCY_CAP)).alias("x"))
        .agg(
            F.count(F.lit(1)).alias("customers"),
            F.sum("expected_purchases").alias("predicted"),
            F.coalesce(F.sum("actual"), F.lit(0)).alias("actual"),
        )
        .orderBy("x")
        .collect()  # at most FREQUENCY_CAP + 1 rows
    )
    by_frequency = [
        {"x": r.x, "customers": r.customers, "predicted": round(r.predicted, 3), "actual": r.actual}
        for r in buckets
    ]
    return Holdout(
        days,
        sum(b["customers"] for b in by_frequency),
        float(sum(r.predicted for r in buckets)),
        int(sum(b["actual"] for b in by_frequency)),
        by_frequency,
    )


def drift(params: dict[str, float] | None, previous: dict[str, float] | None) -> float | None:
    """Largest relative change of the BG/NBD parameters since the previous fit."""
    if not params or not previous:
        return None
    return max(abs(params[k] - previous[k]) / abs(previous[k]) for k in BGNBD_PARAMS)


def model_rows(
    spark,
    fits: list[ClvFit],
    params: ClvParams,
    previous: dict[str, float] | None = None,
    holdouts: dict[date, Holdout] | None = None,
) -> DataFrame:
    """`gold/clv_model`: one row per fitted date, nulls and the reason where a model is missing.

    `previous`: the BG/NBD parameters of the latest fit before the first date (parameter drift).
    """
    rows = []
    for f in sorted(fits, key=lambda f: f.snapshot_date):
        bg, gg = f.purchases, f.spend
        status = "not_fitted" if bg is None else ("fitted" if f.reason is None else "not_converged")
        h = (holdouts or {}).get(f.snapshot_date)
        rows.append(
            (
                f.snapshot_date,
                status,
                f.reason,
                int(params.unit_days),
                int(params.horizon_days),
                bg.customers if bg else None,
                gg.customers if gg else None,
                bg.patterns if bg else None,
                gg.patterns if gg else None,
                *([bg.params[k] for k in BGNBD_PARAMS] if bg else [None] * 4),
                bg.loglik if bg else None,
                *([gg.params[k] for k in GG_PARAMS] if gg else [None] * 3),
                gg.loglik if gg else None,
                drift(bg.params if bg else None, previous),
                *(
                    (h.days, h.customers, h.predicted, h.actual, h.relative_error, json.dumps(h.by_frequency))
                    if h
                    else [None] * 6
                ),
            )
        )
        if bg is not None and f.reason is None:
            previous = bg.params
    return spark.createDataFrame(rows, CLV_MODEL.schema)


def clv_outputs(
    valid_orders: DataFrame,
    dates: list[date],
    params: ClvParams,
    keep=lambda df: df,
    previous: dict[str, float] | None = None,
) -> tuple[DataFrame, DataFrame]:
    """(`gold/customer_predictions`, `gold/clv_model`) of the dates; one fit per date.

    `keep` persists the calibration statistics, read by every fit and prediction of the dates.
    """
    stats = keep(calibration_stats(valid_orders))
    fits = [fit(stats, day, params) for day in dates]
    rows = reduce(DataFrame.unionByName, [predictions(stats, f, params) for f in fits])
    return rows, model_rows(valid_orders.sparkSession, fits, params, previous)


def previous_parameters(lake, before: date) -> dict[str, float] | None:
    """The BG/NBD parameters of the latest converged fit in the lake's gold/clv_model dated
    before `before` (one row read); None without such a fit."""
    if not lake.exists(CLV_MODEL):
        return None
    latest = (
        lake.read(CLV_MODEL)
        .filter((F.col("snapshot_date") < F.lit(before)) & (F.col("status") == "fitted"))
        .orderBy(F.col("snapshot_date").desc())
        .select(*BGNBD_PARAMS)
        .limit(1)
        .collect()
    )
    return latest[0].asDict() if latest else None
