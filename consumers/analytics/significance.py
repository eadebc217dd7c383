"""Is a difference between two samples more than noise? Welch's t-test (unequal variances),
as the A/B evaluation uses it on per-trade returns. Pure functions, checked against scipy's
``ttest_ind(equal_var=False)`` in the tests; no dependency at run time.

The t distribution's tail comes from the regularized incomplete beta function,
I_x(a, b) = B(x; a, b) / B(a, b), evaluated by its continued fraction (Lentz's method), the
standard way (Press et al., Numerical Recipes, 6.4).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Welch:
    """Treatment minus control."""

    control_n: int
    treatment_n: int
    difference: float  # mean(treatment) - mean(control)
    t: float
    df: float  # Welch-Satterthwaite degrees of freedom
    p_value: float  # two-sided
    ci_low: float  # confidence interval of the difference
    ci_high: float
    confidence: float


def welch_t_test(control: Sequence[float], treatment: Sequence[float],
                 confidence: float = 0.95) -> Welch | None:
    """None when the test is undefined: fewer than two values on a side, or no variance."""
    n1, n2 = len(control), len(treatment)
    if n1 < 2 or n2 < 2:
        return None
    v1, v2 = statistics.variance(control) / n1, statistics.variance(treatment) / n2
    se2 = v1 + v2
    spread = v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1)
    if not (se2 > 0 and spread > 0):  # no variance (or so little that its square underflows)
        return None
    se = math.sqrt(se2)
    difference = statistics.fmean(treatment) - statistics.fmean(control)
    t = difference / se
    df = se2 * se2 / spread
    half_width = t_quantile(0.5 + confidence / 2, df) * se
    return Welch(n1, n2, difference, t, df, t_two_sided_p(t, df),
                 difference - half_width, difference + half_width, confidence)


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return regularized_beta(df / (df + t * t), df / 2, 0.5)


def t_quantile(probability: float, df: float) -> float:
    """The t with P(T <= t) = ``probability`` (> 0.5), by bisection on the tail."""
    tail = 2 * (1 - probability)  # two-sided p of the quantile
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_two_sided_p(middle, df) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def regularized_beta(x: float, a: float, b: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):  # the fraction converges fast here; else use the symmetry
        return front * _beta_fraction(x, a, b) / a
    return 1 - front * _beta_fraction(1 - x, b, a) / b


_TINY = 1e-300


def _beta_fraction(x: float, a: float, b: float) -> float:
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > _TINY else _TINY)
            c = 1 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return result
