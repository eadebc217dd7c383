"""Every rollup ratio against an independent reference on random inputs (tolerance 1e-4).

Strategy ratios against empyrical-reloaded (Sharpe, Sortino, Calmar, max drawdown), model
figures against scikit-learn (accuracy, precision, recall, F1, ROC AUC, Brier score, and ECE
from its calibration_curve).
"""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import empyrical
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from consumers.analytics import performance as perf
from consumers.analytics.performance import RatioSettings, ScoredPrediction, TradeDay, Undefined

TOLERANCE = 1e-4

pnl_cents = st.integers(min_value=-250_000, max_value=250_000)  # ±2,500.00 a day
capitals = st.sampled_from([Decimal(100_000), Decimal(250_000), Decimal("1000000.50")])
periods_per_year = st.sampled_from([252, 365])
risk_free = st.sampled_from([Decimal(0), Decimal("0.04")])


def close(ours: float | Decimal | None, reference: float) -> bool:
    if ours is None:
        return not math.isfinite(reference)
    return math.isclose(float(ours), reference, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def returns_of(pnls: list[Decimal], capital: Decimal) -> np.ndarray:
    """The reference's daily returns, computed here (not by the code under test): the
    percentage change of the end-of-day equity curve that starts at the capital base, in
    exact rational arithmetic (nearly equal returns make Sharpe ill-conditioned: rounding
    differences in its input would show as a wrong ratio)."""
    curve = [Fraction(capital)]
    for pnl in pnls:
        curve.append(curve[-1] + Fraction(pnl))
    assert all(equity > 0 for equity in curve)  # ±2,500 a day cannot exhaust 100,000 in 40 days
    return np.array([float((after - before) / before) for before, after in itertools.pairwise(curve)])


@settings(max_examples=300, deadline=None)
@given(st.lists(pnl_cents, min_size=2, max_size=40), capitals, periods_per_year, risk_free)
def test_ratios_match_empyrical(cents: list[int], capital: Decimal, per_year: int,
                                rf: Decimal) -> None:
    pnls = [Decimal(c) / 100 for c in cents]
    returns = perf.daily_returns(pnls, capital)
    assert returns is not None
    series = returns_of(pnls, capital)
    assert returns == list(series)  # both correctly rounded from the exact value
    daily_rf = float(rf) / per_year
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(len(pnls))]

    assert close(perf.sharpe(returns, daily_rf, per_year),
                 empyrical.sharpe_ratio(series, risk_free=daily_rf, annualization=per_year))
    assert close(perf.sortino(returns, daily_rf, per_year),
                 empyrical.sortino_ratio(series, required_return=daily_rf,
                                         annualization=per_year))
    drawdown = perf.max_drawdown(days, pnls, capital).fraction
    assert close(drawdown, -empyrical.max_drawdown(series))
    assert close(perf.calmar(returns, drawdown, per_year),
                 empyrical.calmar_ratio(series, annualization=per_year))


@settings(max_examples=200, deadline=None)
@given(st.lists(pnl_cents, min_size=1, max_size=30), capitals, periods_per_year, risk_free)
def test_stored_figures_are_the_reference_rounded(cents: list[int], capital: Decimal,
                                                  per_year: int, rf: Decimal) -> None:
    """The whole path from per-day aggregates to DECIMAL(8, 4) columns, with and without a
    risk-free rate."""
    days = [_trade_day(date(2026, 1, 1) + timedelta(days=i), Decimal(c) / 100)
            for i, c in enumerate(cents)]
    figures = perf.strategy_figures(days, RatioSettings(capital, per_year, rf), Undefined())
    series = returns_of([d.net_pnl for d in days], capital)
    daily_rf = float(rf) / per_year
    with np.errstate(all="ignore"):
        references = {
            "sharpe_ratio": empyrical.sharpe_ratio(series, risk_free=daily_rf,
                                                   annualization=per_year),
            "sortino_ratio": empyrical.sortino_ratio(series, required_return=daily_rf,
                                                     annualization=per_year),
            "calmar_ratio": empyrical.calmar_ratio(series, annualization=per_year),
            "max_drawdown": -empyrical.max_drawdown(series),
        }
    for column, reference in references.items():
        ours = getattr(figures, column)
        if ours is None:  # undefined, or beyond DECIMAL(8, 4): never a wrong number
            assert not math.isfinite(reference) or abs(reference) >= 9999.99995 or (
                column != "max_drawdown" and len(days) < 2), (column, reference)
        else:
            assert close(ours, reference), (column, ours, reference)


def _trade_day(day: date, pnl: Decimal) -> TradeDay:
    win, loss = pnl > 0, pnl < 0
    return TradeDay(day=day, trades=1, wins=int(win), losses=int(loss),
                    breakevens=int(not (win or loss)), gross_profit=pnl if win else Decimal(0),
                    gross_loss=pnl if loss else Decimal(0), net_pnl=pnl, commission=Decimal(0),
                    largest_win=pnl if win else None, largest_loss=pnl if loss else None,
                    slippage_sum=Decimal(0), slippage_count=0, fill_latency_us_sum=0,
                    fill_latency_count=0)


directions = st.sampled_from(["LONG", "SHORT", "NEUTRAL"])
confidences = st.one_of(  # bin edges (0.1, 0.2, ...) drawn often: binning must match there too
    st.integers(min_value=0, max_value=10_000).map(lambda n: Decimal(n) / 10_000),
    st.integers(min_value=0, max_value=10).map(lambda n: Decimal(n) / 10))
predictions = st.lists(
    st.builds(ScoredPrediction, directions, directions, confidences, st.none()),
    min_size=1, max_size=200)


@settings(max_examples=300, deadline=None)
@given(predictions)
def test_classification_figures_match_scikit_learn(sample: list[ScoredPrediction]) -> None:
    actual = np.array([p.actual == "LONG" for p in sample])
    predicted = np.array([p.predicted == "LONG" for p in sample])
    correct = np.array([p.correct for p in sample])
    confidence = np.array([float(p.confidence) for p in sample if p.confidence is not None])
    scored = list(zip(confidence.tolist(), correct.tolist(), strict=True))

    assert close(perf.accuracy(sample),
                 accuracy_score([p.actual for p in sample], [p.predicted for p in sample]))
    assert close(perf.precision(sample), precision_score(actual, predicted,
                                                         zero_division=np.nan))
    assert close(perf.recall(sample), recall_score(actual, predicted, zero_division=np.nan))
    assert close(perf.f1(sample), f1_score(actual, predicted, zero_division=np.nan))
    assert close(perf.brier(scored), brier_score_loss(correct, confidence))
    if correct.all() or not correct.any():
        assert perf.roc_auc(scored) is None
    else:
        assert close(perf.roc_auc(scored), roc_auc_score(correct, confidence))
    assert close(perf.calibration_error(scored), _reference_ece(correct, confidence))


def _reference_ece(correct: np.ndarray, confidence: np.ndarray) -> float:
    """ECE from scikit-learn's per-bin means, weighted by the bins' sizes."""
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
    edges = np.linspace(0.0, 1.0, 11)
    sizes = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=10)
    weights = sizes[sizes > 0] / len(confidence)
    return float(np.sum(weights * np.abs(prob_true - prob_pred)))


@pytest.mark.parametrize(("day", "week", "month"), [
    (date(2026, 3, 2), date(2026, 3, 2), date(2026, 3, 1)),  # a Monday
    (date(2026, 3, 1), date(2026, 2, 23), date(2026, 3, 1)),  # a Sunday: previous Monday
    (date(2026, 12, 31), date(2026, 12, 28), date(2026, 12, 1)),
])
def test_periods_start_on_monday_and_the_first(day: date, week: date, month: date) -> None:
    assert perf.period_start(day, "DAY") == day
    assert perf.period_start(day, "WEEK") == week
    assert perf.period_start(day, "MONTH") == month
    assert perf.period_end(month, "MONTH") == (month + timedelta(days=31)).replace(day=1)
