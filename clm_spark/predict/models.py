"""BG/NBD (repeat purchases, P(alive)) and Gamma-Gamma (spend), fitted on weighted patterns.

The driver never sees customers, only the distinct calibration patterns with the number of
customers sharing each: (x, t_x, T) for BG/NBD, (x, m_x) for Gamma-Gamma. Each pattern's
log-likelihood is multiplied by its count, which is exactly the per-customer likelihood (a
pattern-only fit without the weights would change the estimates).

Parameters are optimised on the log scale (always positive, no bounds needed), and the
log-likelihoods are written with log-gamma functions and log-sum-exp, so neither large x nor
large T overflows (no Gamma(x) or (alpha + T)^(r + x) is ever formed).

References: Fader, Hardie and Lee (2005), "Counting your customers the easy way: an alternative to
the Pareto/NBD model", Marketing Science 24(2); Fader and Hardie (2013), "The Gamma-Gamma model of
monetary value"; Fader, Hardie and Lee (2005), "RFM and CLV: using iso-value curves".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

BGNBD_PARAMS = ("r", "alpha", "a", "b")
LOG_BOUND = 12.0  # parameters stay within e^-12 .. e^12
GG_PARAMS = ("p", "q", "gamma")


@dataclass(frozen=True)
class Fit:
    """A maximum-likelihood fit: parameters, log-likelihood and how the optimiser ended."""

    params: dict[str, float]
    loglik: float
    converged: bool
    message: str
    customers: int
    patterns: int


def bgnbd_loglik(params, x, t_x, T, weights) -> float:
    """Sum over patterns of count × log L(r, alpha, a, b | x, t_x, T)."""
    r, alpha, a, b = params
    x, t_x, T, w = (np.asarray(v, dtype=float) for v in (x, t_x, T, weights))
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return float(np.sum(w * (a1 + a2 + np.logaddexp(a3, a4))))


def gamma_gamma_loglik(params, x, m, weights) -> float:
    """Sum over repeat buyers' patterns of count × log f(m_x | p, q, gamma, x)."""
    p, q, g = params
    x, m, w = (np.asarray(v, dtype=float) for v in (x, m, weights))
    px = p * x
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(g + m * x)
    )
    return float(np.sum(w * ll))


def _fit(loglik, names, start, data, weights, max_iter: int) -> Fit:
    w = np.asarray(weights, dtype=float)

    def nll(log_params):
        value = -loglik(np.exp(log_params), *data, w)
        return value if np.isfinite(value) else 1e300

    x0 = np.log(np.asarray(start, dtype=float))
    # bounded quasi-Newton on the log scale: a runaway parameter (a degenerate population) stops
    # at the bound and is reported as not converged instead of iterating for minutes
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(x0)
    best = optimize.minimize(
        nll, x0, method="L-BFGS-B", bounds=bounds, options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-9}
    )
    params = dict(zip(names, (float(v) for v in np.exp(best.x)), strict=True))
    at_bound = bool(np.any(np.abs(best.x) >= LOG_BOUND - 1e-6))
    ok = bool(best.success and np.isfinite(best.fun) and best.fun < 1e300 and not at_bound)
    message = "a parameter reached its bound (degenerate population)" if at_bound else str(best.message)
    return Fit(params, float(-best.fun), ok, message, int(round(w.sum())), len(w))


def fit_bgnbd(x, t_x, T, weights, max_iter: int = 1000) -> Fit:
    """Maximum-likelihood BG/NBD on patterns (x repeat purchases, t_x last, T age; one time unit)."""
    return _fit(bgnbd_loglik, BGNBD_PARAMS, (1.0, 1.0, 1.0, 1.0), (x, t_x, T), weights, max_iter)


def fit_gamma_gamma(x, m, weights, max_iter: int = 1000) -> Fit:
    """Maximum-likelihood Gamma-Gamma on repeat buyers' patterns (x > 0, m_x > 0 their mean value)."""
    return _fit(gamma_gamma_loglik, GG_PARAMS, (1.0, 1.0, 1.0), (x, m), weights, max_iter)


def p_alive(params: dict[str, float], x, t_x, T) -> np.ndarray:
    """P(still active at T | x, t_x, T); 1 for a customer without repeat purchases."""
    r, alpha, a, b = (params[k] for k in BGNBD_PARAMS)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    repeat = x > 0
    log_odds = (
        np.log(a)
        - np.log(np.where(repeat, b + x - 1, 1.0))
        + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    )
    return np.where(repeat, special.expit(-log_odds), 1.0)


def expected_purchases(params: dict[str, float], horizon: float, x, t_x, T) -> np.ndarray:
    """E[purchases in (T, T + horizon] | x, t_x, T] (Fader, Hardie and Lee 2005, eq. 10)."""
    r, alpha, a, b = (params[k] for k in BGNBD_PARAMS)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t = float(horizon)
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    ratio = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    numerator = (a + b + x - 1) / (a - 1) * (1 - ratio * hyp)
    return numerator * p_alive(params, x, t_x, T)


def expected_spend(params: dict[str, float], x, m) -> np.ndarray:
    """E[value of a future transaction | x, m_x]; the population mean p·gamma/(q−1) when x = 0."""
    p, q, g = (params[k] for k in GG_PARAMS)
    x, m = (np.asarray(v, dtype=float) for v in (x, m))
    population = p * g / (q - 1)
    weight = p * x / (p * x + q - 1)
    return np.where(x > 0, (1 - weight) * population + weight * np.nan_to_num(m), population)
