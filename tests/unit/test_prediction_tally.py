"""Model figures from a tally (counts per confidence, direction pair and regime, as the server
returns them) equal, to the last bit, the row-by-row definitions they replaced.

The reference below is the row-by-row code as it stood before the rollup tallied on the
server (git show b11c8bb:consumers/analytics/performance.py): a list of every prediction,
math.fsum over them, ranks by walking the sorted list.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.analytics import performance as perf
from consumers.analytics.performance import PredictionTally, ScoredPrediction, Undefined


def reference_auc(scored: list[tuple[float, bool]]) -> float | None:
    positives = sum(1 for _, right in scored if right)
    negatives = len(scored) - positives
    if positives == 0 or negatives == 0:
        return None
    ordered = sorted(scored, key=lambda s: s[0])
    rank_sum, i = 0.0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(1 for _, right in ordered[i:j] if right)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def reference_brier(scored: list[tuple[float, bool]]) -> float | None:
    if not scored:
        return None
    return math.fsum((c - right) ** 2 for c, right in scored) / len(scored)


def reference_ece(scored: list[tuple[float, bool]]) -> float | None:
    if not scored:
        return None
    bins: dict[int, list[tuple[float, bool]]] = {}
    for confidence, right in scored:
        index = max(math.ceil(round(confidence * 10, 9)) - 1, 0)
        bins.setdefault(min(index, 9), []).append((confidence, right))
    return math.fsum(
        len(members) / len(scored) * abs(
            sum(right for _, right in members) / len(members)
            - math.fsum(c for c, _ in members) / len(members))
        for members in bins.values())


def reference_classification(
    predictions: list[ScoredPrediction],
) -> tuple[float | None, float | None, float | None]:
    counts = Counter((p.predicted == "LONG", p.actual == "LONG") for p in predictions)
    tp, fp, fn = counts[True, True], counts[True, False], counts[False, True]

    def div(a: int, b: int) -> float | None:
        return None if b == 0 else a / b
    return div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)


directions = st.sampled_from(["LONG", "SHORT", "NEUTRAL"])
confidences = st.one_of(st.none(),  # DECIMAL(5, 4), bin edges and repeats drawn often
                        st.integers(0, 10_000).map(lambda n: Decimal(n).scaleb(-4)),
                        st.integers(0, 10).map(lambda n: Decimal(n) / 10),
                        st.sampled_from([Decimal("0.3333"), Decimal("0.6667")]))
regimes = st.sampled_from([None, *perf.REGIMES])
predictions = st.lists(st.builds(ScoredPrediction, directions, directions, confidences,
                                 regimes), min_size=0, max_size=400)


@settings(max_examples=400, deadline=None)
@given(predictions, st.randoms(use_true_random=False))
def test_tally_figures_equal_the_row_by_row_definitions(
    sample: list[ScoredPrediction], order: object,
) -> None:
    scored = [(float(p.confidence), p.correct) for p in sample if p.confidence is not None]
    precision, recall, f1 = reference_classification(sample)
    notes = Undefined()
    expected = perf.ModelFigures(
        samples=len(sample),
        accuracy=perf.ratio(sum(p.correct for p in sample) / len(sample) if sample else None,
                            5, 4, "accuracy", notes),
        precision=perf.ratio(precision, 5, 4, "precision", notes),
        recall=perf.ratio(recall, 5, 4, "recall", notes),
        f1_score=perf.ratio(f1, 5, 4, "f1_score", notes),
        auc_roc=perf.ratio(reference_auc(scored), 5, 4, "auc_roc", notes),
        brier_score=perf.ratio(reference_brier(scored), 6, 5, "brier_score", notes),
        expected_calibration_error=perf.ratio(reference_ece(scored), 6, 5, "ece", notes),
        regime_accuracy={
            regime: perf.ratio(
                (sum(p.correct for p in of) / len(of)) if (of := [
                    p for p in sample if p.regime == regime]) else None, 5, 4, regime, notes)
            for regime in perf.REGIMES})

    # tallied in any order and in uneven parts, as GROUP BY rows arrive
    tally = PredictionTally()
    shuffled = list(sample)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    for p in shuffled:
        tally.add(p.predicted, p.actual, p.confidence, p.regime, 1)
    assert perf.model_figures(tally, Undefined()) == expected
    assert perf.model_figures(sample, Undefined()) == expected


def test_counts_stand_for_repeated_rows() -> None:
    """A confidence counted n times scores as n rows of it (the server sends counts)."""
    rows = ([ScoredPrediction("LONG", "LONG", Decimal("0.1"), "ranging")] * 7
            + [ScoredPrediction("LONG", "SHORT", Decimal("0.1"), "ranging")] * 3
            + [ScoredPrediction("SHORT", "SHORT", Decimal("0.9"), None)] * 5)
    counted = PredictionTally()
    counted.add("LONG", "LONG", Decimal("0.1"), "ranging", 7)
    counted.add("LONG", "SHORT", Decimal("0.10"), "ranging", 3)  # the same confidence
    counted.add("SHORT", "SHORT", Decimal("0.9"), None, 5)
    assert perf.model_figures(counted, Undefined()) == perf.model_figures(rows, Undefined())
    assert counted.samples == 15
    assert counted.by_regime == {"ranging": perf.Calls(10, 7)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(-1e12, 1e12), st.floats(0, 1)),
                          st.integers(1, 50)), max_size=30))
def test_exact_sum_is_fsum_of_the_repeated_values(terms: list[tuple[float, int]]) -> None:
    """Both ways it sums (fsum of few repeats, integers for many) are exactly fsum's."""
    repeated = [value for value, count in terms for _ in range(count)]
    assert perf.exact_sum(terms) == math.fsum(repeated)


def test_exact_sum_of_many_repeats_cancels_exactly() -> None:
    terms = [(0.1, 3), (1e16, 1), (0.3, 10), (-1e16, 1), (2.5e-7, 1_000)]
    assert perf.exact_sum(terms) == math.fsum([v for v, n in terms for _ in range(n)])
    assert perf.exact_sum([]) == 0.0
