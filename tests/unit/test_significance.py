"""Welch's t-test of the A/B evaluation against scipy (an independent implementation), and
the evaluation's decision rules."""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from consumers.analytics.performance import RatioSettings
from consumers.analytics.significance import Welch, welch_t_test
from consumers.improvement.abtest import AbTestSettings, decide, improvement_percent

# per-trade returns in basis points, as trades have them
samples = st.lists(st.integers(-2500, 2500).map(lambda bp: bp / 10_000), min_size=2,
                   max_size=200)


@settings(max_examples=300, deadline=None)
@given(control=samples, treatment=samples, confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_welch_matches_scipy(control: list[float], treatment: list[float],
                             confidence: float) -> None:
    welch = welch_t_test(control, treatment, confidence)
    if welch is None:  # undefined exactly when neither side varies
        assert len(set(control)) == len(set(treatment)) == 1
        return
    with warnings.catch_warnings():  # scipy warns about nearly identical values, then answers
        warnings.simplefilter("ignore", RuntimeWarning)
        # scipy: treatment first, so the statistic and interval are treatment minus control
        reference = stats.ttest_ind(treatment, control, equal_var=False)
    interval = reference.confidence_interval(confidence)
    assert welch.t == pytest.approx(reference.statistic, rel=1e-9, abs=1e-12)
    assert welch.df == pytest.approx(reference.df, rel=1e-9)
    assert welch.p_value == pytest.approx(reference.pvalue, rel=1e-7, abs=1e-300)
    assert welch.ci_low == pytest.approx(interval.low, rel=1e-7, abs=1e-12)
    assert welch.ci_high == pytest.approx(interval.high, rel=1e-7, abs=1e-12)
    assert (welch.control_n, welch.treatment_n) == (len(control), len(treatment))


def test_tiny_p_values_and_undefined_cases() -> None:
    far = welch_t_test([0.0, 0.01, -0.01] * 30, [1.0, 1.01, 0.99] * 30)
    assert far is not None
    reference = stats.ttest_ind([1.0, 1.01, 0.99] * 30, [0.0, 0.01, -0.01] * 30,
                                equal_var=False)
    assert far.p_value == pytest.approx(reference.pvalue, rel=1e-6)
    assert far.p_value < 1e-100
    assert welch_t_test([0.1], [0.1, 0.2]) is None  # one value: no variance estimate
    assert welch_t_test([0.1, 0.1], [0.2, 0.2]) is None  # no variance at all


RULES = AbTestSettings(RatioSettings(Decimal(100_000), 252, Decimal(0)), "UTC", 0.05, 30)


def welch(difference: float, p_value: float) -> Welch:
    return Welch(40, 40, difference, 0.0, 70.0, p_value, 0.0, 0.0, 0.95)


@pytest.mark.parametrize(("improvement", "test", "over", "trades", "status"), [
    (Decimal("12.5"), welch(0.01, 0.001), True, (40, 40), "promoted"),
    (Decimal("12.5"), welch(0.01, 0.2), True, (40, 40), "rejected"),  # noise
    (Decimal("4.99"), welch(0.01, 0.001), True, (40, 40), "rejected"),  # below the minimum
    (Decimal("12.5"), welch(-0.01, 0.001), True, (40, 40), "rejected"),  # returns say worse
    (Decimal("12.5"), welch(0.01, 0.001), True, (29, 40), "running"),  # too few: runs on
    (Decimal("12.5"), welch(0.01, 0.001), "longest", (29, 40), "rejected"),  # ... not forever
    (Decimal("12.5"), welch(0.01, 0.001), "longest", (40, 40), "promoted"),
    (None, welch(0.01, 0.001), True, (40, 40), "rejected"),  # metric undefined
    (Decimal("12.5"), welch(0.01, 0.001), False, (40, 40), "running"),  # not over yet
    (Decimal("-20"), welch(-0.01, 0.001), False, (40, 40), "rollback"),  # harm: stop early
    (Decimal("-20"), welch(-0.01, 0.3), False, (40, 40), "running"),  # worse, but noise
    (Decimal("-20"), None, True, (40, 40), "rejected"),
])
def test_decisions(improvement: Decimal | None, test: Welch | None, over: bool | str,
                   trades: tuple[int, int], status: str) -> None:
    decided, conclusion = decide(improvement=improvement, welch=test, minimum=Decimal(5),
                                 duration_over=bool(over), longest_over=over == "longest",
                                 trades=trades, rules=RULES)
    assert decided == status
    assert (conclusion is None) == (status == "running")
    assert conclusion is None or len(conclusion) <= 200


def test_improvement_percent_is_better_positive() -> None:
    assert improvement_percent("win_rate", Decimal("0.5"), Decimal("0.6")) == Decimal("20.00")
    assert improvement_percent("net_pnl", Decimal("-100"), Decimal("-50")) == Decimal("50.00")
    assert improvement_percent("max_drawdown", Decimal("0.2"), Decimal("0.1")) == Decimal("50.00")
    assert improvement_percent("sharpe_ratio", Decimal(0), Decimal(1)) is None
    assert improvement_percent("sharpe_ratio", None, Decimal(1)) is None
    assert improvement_percent("net_pnl", Decimal("0.01"), Decimal("1000")) is None  # > 9999.99
