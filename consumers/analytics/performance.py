"""Performance figures: pure functions, no I/O. Definitions are in docs/analytics.md ("Rollups").

Strategy figures are computed from per-day aggregates of closed trades (``TradeDay``); model
figures from validated predictions (``ScoredPrediction``). ``strategy_figures`` is their
definition: the rollup computes the same on the server, set-based (schema/queries/rollup.sql
strategy_periods), and tests/integration/test_rollup_reference.py holds the two equal. Money
stays ``Decimal`` throughout; ratios (returns, Sharpe, AUC, ...) are floats, rounded to their
column's scale only when stored.
A figure that is undefined for the input (one daily return, no losing trade, zero variance, a
value beyond its column's range) is ``None``, and the reason is recorded in ``undefined`` so
the caller can log it; nothing here raises on degenerate input.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, NamedTuple

import msgspec

PeriodType = Literal["DAY", "WEEK", "MONTH"]
PERIOD_TYPES: tuple[PeriodType, ...] = ("DAY", "WEEK", "MONTH")
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
CALIBRATION_BINS = 10


def period_start(day: date, period: PeriodType) -> date:
    """The first day of ``day``'s period: itself, its Monday, or the 1st of its month."""
    if period == "DAY":
        return day
    if period == "WEEK":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(start: date, period: PeriodType) -> date:
    """The first day after the period that starts on ``start``."""
    if period == "DAY":
        return start + timedelta(days=1)
    if period == "WEEK":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


class TradeDay(msgspec.Struct, frozen=True):
    """Closed trades of one (strategy, model version) whose exit falls on ``day``.

    This and StrategyFigures are Structs, not frozen dataclasses: a Struct is built in 0.5 us
    where a 22-field frozen dataclass took 5.4, which mattered while the rollup computed the
    strategy figures here (tens of thousands a year; the server computes them now)."""

    day: date
    trades: int
    wins: int
    losses: int
    breakevens: int
    gross_profit: Decimal  # Σ net_pnl of WIN trades
    gross_loss: Decimal  # Σ net_pnl of LOSS trades (≤ 0)
    net_pnl: Decimal
    commission: Decimal
    largest_win: Decimal | None
    largest_loss: Decimal | None
    slippage_sum: Decimal
    slippage_count: int
    fill_latency_us_sum: int  # Σ(filled_at - order_submitted_at) over the trades' timed fills
    fill_latency_count: int


@dataclass(frozen=True)
class RatioSettings:
    capital_base: Decimal  # equity at the start of every period
    periods_per_year: int  # annualisation of daily figures
    risk_free_rate: Decimal  # annual; per day = annual / periods_per_year


@dataclass
class Undefined:
    """Why figures came out NULL: (column, reason) pairs, for one log line per kind."""

    reasons: list[tuple[str, str]] = field(default_factory=list)

    def note(self, column: str, reason: str) -> None:
        self.reasons.append((column, reason))


class StrategyFigures(msgspec.Struct, frozen=True):
    total_trades: int
    winning_trades: int
    losing_trades: int
    breakeven_trades: int
    gross_profit: Decimal | None
    gross_loss: Decimal | None
    net_pnl: Decimal | None
    total_commission: Decimal | None
    win_rate: Decimal | None
    profit_factor: Decimal | None
    avg_win: Decimal | None
    avg_loss: Decimal | None
    avg_trade: Decimal | None
    largest_win: Decimal | None
    largest_loss: Decimal | None
    max_drawdown: Decimal | None
    max_drawdown_duration_days: int | None
    sharpe_ratio: Decimal | None
    sortino_ratio: Decimal | None
    calmar_ratio: Decimal | None
    avg_slippage: Decimal | None
    avg_fill_time_ms: int | None


def strategy_figures(
    days: Sequence[TradeDay], ratios: RatioSettings, undefined: Undefined
) -> StrategyFigures:
    """Every strategy_performance figure for one period from its days (in any order)."""
    days = sorted(days, key=lambda d: d.day) if len(days) > 1 else days
    period = _summed(days)
    total, wins, losses = period.trades, period.wins, period.losses
    gross_profit, gross_loss, net_pnl = period.gross_profit, period.gross_loss, period.net_pnl
    pnls = [d.net_pnl for d in days]
    returns = daily_returns(pnls, ratios.capital_base)
    if returns is None:
        undefined.note("sharpe_ratio, sortino_ratio, calmar_ratio", "capital base exhausted")
    drawdown = max_drawdown([d.day for d in days], pnls, ratios.capital_base)
    daily_rf = float(ratios.risk_free_rate) / ratios.periods_per_year
    return StrategyFigures(
        total_trades=total,
        winning_trades=wins,
        losing_trades=losses,
        breakeven_trades=period.breakevens,
        gross_profit=money(gross_profit, "gross_profit", undefined),
        gross_loss=money(gross_loss, "gross_loss", undefined),
        net_pnl=money(net_pnl, "net_pnl", undefined),
        total_commission=money(period.commission, "total_commission", undefined),
        win_rate=ratio(_div(wins, total), 5, 4, "win_rate", undefined),
        profit_factor=ratio(_div(gross_profit, -gross_loss), 8, 4, "profit_factor", undefined,
                            why="no losing trade"),
        avg_win=money(_div(gross_profit, wins), "avg_win", undefined, why="no winning trade"),
        avg_loss=money(_div(gross_loss, losses), "avg_loss", undefined, why="no losing trade"),
        avg_trade=money(_div(net_pnl, total), "avg_trade", undefined),
        largest_win=money(period.largest_win, "largest_win", undefined, why="no winning trade"),
        largest_loss=money(period.largest_loss, "largest_loss", undefined,
                           why="no losing trade"),
        max_drawdown=ratio(drawdown.fraction, 8, 4, "max_drawdown", undefined),
        max_drawdown_duration_days=drawdown.duration_days,
        sharpe_ratio=ratio(
            sharpe(returns, daily_rf, ratios.periods_per_year) if returns else None,
            8, 4, "sharpe_ratio", undefined, why="fewer than two daily returns or no variance"),
        sortino_ratio=ratio(
            sortino(returns, daily_rf, ratios.periods_per_year) if returns else None,
            8, 4, "sortino_ratio", undefined, why="fewer than two daily returns or no downside"),
        calmar_ratio=ratio(
            calmar(returns, drawdown.fraction, ratios.periods_per_year) if returns else None,
            8, 4, "calmar_ratio", undefined, why="no drawdown"),
        avg_slippage=_quantize(_div(period.slippage_sum, period.slippage_count), 18, 8,
                               "avg_slippage", undefined),
        avg_fill_time_ms=_round_int(
            _div(period.fill_latency_us_sum, period.fill_latency_count * 1000),
            "avg_fill_time_ms", undefined),
    )


def _summed(days: Sequence[TradeDay]) -> TradeDay:
    """The days' trades as one day, dated the first (a single day is itself: most periods
    are days)."""
    if len(days) == 1:
        return days[0]
    wins = [d.largest_win for d in days if d.largest_win is not None]
    losses = [d.largest_loss for d in days if d.largest_loss is not None]
    return TradeDay(
        day=days[0].day if days else date.min,
        trades=sum(d.trades for d in days), wins=sum(d.wins for d in days),
        losses=sum(d.losses for d in days), breakevens=sum(d.breakevens for d in days),
        gross_profit=sum((d.gross_profit for d in days), Decimal(0)),
        gross_loss=sum((d.gross_loss for d in days), Decimal(0)),
        net_pnl=sum((d.net_pnl for d in days), Decimal(0)),
        commission=sum((d.commission for d in days), Decimal(0)),
        largest_win=max(wins, default=None), largest_loss=min(losses, default=None),
        slippage_sum=sum((d.slippage_sum for d in days), Decimal(0)),
        slippage_count=sum(d.slippage_count for d in days),
        fill_latency_us_sum=sum(d.fill_latency_us_sum for d in days),
        fill_latency_count=sum(d.fill_latency_count for d in days))


def daily_returns(pnls: Sequence[Decimal], capital_base: Decimal) -> list[float] | None:
    """Each day's net P&L over the equity it started with (capital base + earlier days' P&L).

    None when equity reaches zero or below: later returns would have no meaning.
    """
    equity = capital_base
    returns: list[float] = []
    for pnl in pnls:
        if equity <= 0:
            return None
        returns.append(float(pnl / equity))
        equity += pnl
    return returns


class Drawdown(msgspec.Struct, frozen=True):
    fraction: float | None  # (peak - trough) / peak, ≥ 0
    duration_days: int | None  # peak day to recovery day (or the last day if not recovered)


def max_drawdown(days: Sequence[date], pnls: Sequence[Decimal], capital_base: Decimal) -> Drawdown:
    """The largest fall of end-of-day equity from its running peak, as a fraction of the peak.

    Equity starts at the capital base on the first day (before its trades), so a loss on the
    first day is a drawdown from the capital base.
    """
    if not days or capital_base <= 0:
        return Drawdown(None, None)
    points = [(days[0], capital_base)]
    for day, pnl in zip(days, pnls, strict=True):
        points.append((day, points[-1][1] + pnl))
    peak_i = worst_peak_i = worst_trough_i = 0
    worst = Decimal(0)
    for i, (_, value) in enumerate(points):
        peak = points[peak_i][1]
        if value >= peak:  # a new high, or back at it: the peak moves to the latest day
            peak_i = i
        elif (fall := (peak - value) / peak) > worst:
            worst, worst_peak_i, worst_trough_i = fall, peak_i, i
    if worst == 0:
        return Drawdown(0.0, 0)
    peak_day, peak_value = points[worst_peak_i]
    recovered = next((day for day, value in points[worst_trough_i + 1:] if value >= peak_value),
                     points[-1][0])
    return Drawdown(float(worst), (recovered - peak_day).days)


def sharpe(returns: Sequence[float], daily_rf: float, periods_per_year: int) -> float | None:
    """Mean excess daily return over its sample standard deviation, times √periods_per_year."""
    if len(returns) < 2:
        return None
    excess = [r - daily_rf for r in returns]
    mean = math.fsum(excess) / len(excess)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in excess) / (len(excess) - 1))
    if std == 0 or not math.isfinite(std):
        return None
    return mean / std * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], daily_rf: float, periods_per_year: int) -> float | None:
    """Annualised mean excess return over annualised downside deviation.

    Downside deviation = √(mean over all days of min(r - rf, 0)²).
    """
    if len(returns) < 2:
        return None
    excess = [r - daily_rf for r in returns]
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in excess) / len(excess))
    if downside == 0:
        return None
    return (math.fsum(excess) / len(excess) * periods_per_year) / (
        downside * math.sqrt(periods_per_year))


def calmar(returns: Sequence[float], drawdown: float | None,
           periods_per_year: int) -> float | None:
    """Compound annual growth rate of ``returns`` over their max drawdown (``max_drawdown``)."""
    growth = math.prod(1 + r for r in returns)
    if not returns or not drawdown or growth <= 0:
        return None
    try:
        annual = growth ** (periods_per_year / len(returns)) - 1
    except OverflowError:
        return None
    return annual / drawdown


# --- model figures ---------------------------------------------------------------------------


class ScoredPrediction(NamedTuple):
    """A validated prediction as the model figures see it (tests and small inputs; the
    rollup hands over a ``PredictionTally`` that the server has counted)."""

    predicted: str  # LONG / SHORT / NEUTRAL
    actual: str
    confidence: Decimal | None
    regime: str | None  # the symbol's regime at prediction time, if a bar was near

    @property
    def correct(self) -> bool:
        return self.predicted == self.actual


class Calls(NamedTuple):
    """How many predictions share something (a confidence, a regime), and how many were right."""

    calls: int
    right: int


@dataclass
class PredictionTally:
    """What every model figure needs from a set of validated predictions: counts, not rows.

    A day of predictions is tallied on the server (schema/queries/rollup.sql prediction_tallies)
    in at most 10,001 confidences x 2 outcomes plus a few counts, however many it holds.
    """

    directions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (predicted, actual)
    by_confidence: dict[Decimal, Calls] = field(default_factory=dict)  # confidence not NULL
    by_regime: dict[str, Calls] = field(default_factory=dict)  # a regime was found

    @classmethod
    def of(cls, predictions: Iterable[ScoredPrediction]) -> PredictionTally:
        tally = cls()
        for p in predictions:
            tally.add(p.predicted, p.actual, p.confidence, p.regime, 1)
        return tally

    def add(self, predicted: str, actual: str, confidence: Decimal | None, regime: str | None,
            calls: int) -> None:
        """``calls`` predictions alike in everything the figures read."""
        right = calls if predicted == actual else 0
        self.count_directions(predicted, actual, calls)
        if confidence is not None:
            self.count_confidence(confidence, calls, right)
        if regime is not None:
            self.count_regime(regime, calls, right)

    def count_directions(self, predicted: str, actual: str, calls: int) -> None:
        self.directions[predicted, actual] += calls

    def count_confidence(self, confidence: Decimal, calls: int, right: int) -> None:
        self.by_confidence[confidence] = _plus(self.by_confidence.get(confidence), calls, right)

    def count_regime(self, regime: str, calls: int, right: int) -> None:
        self.by_regime[regime] = _plus(self.by_regime.get(regime), calls, right)

    @property
    def samples(self) -> int:
        return sum(self.directions.values())

    @property
    def right(self) -> int:
        """The calls whose predicted direction was the actual one."""
        return sum(n for (predicted, actual), n in self.directions.items() if predicted == actual)

    def scored(self) -> list[tuple[float, Calls]]:
        """(confidence as a float, its calls), in ascending confidence (confidences equal as
        floats are one)."""
        scored: list[tuple[float, Calls]] = []
        for confidence, calls in sorted((float(c), n) for c, n in self.by_confidence.items()):
            if scored and scored[-1][0] == confidence:
                calls = _plus(scored.pop()[1], calls.calls, calls.right)
            scored.append((confidence, calls))
        return scored


def _plus(calls: Calls | None, more: int, right: int) -> Calls:
    return Calls(more, right) if calls is None else Calls(calls.calls + more, calls.right + right)


@dataclass(frozen=True)
class ModelFigures:
    samples: int
    accuracy: Decimal | None
    precision: Decimal | None
    recall: Decimal | None
    f1_score: Decimal | None
    auc_roc: Decimal | None
    brier_score: Decimal | None
    expected_calibration_error: Decimal | None
    regime_accuracy: dict[str, Decimal | None]


def model_figures(predictions: Sequence[ScoredPrediction] | PredictionTally,
                  undefined: Undefined) -> ModelFigures:
    """Classification figures of validated predictions; LONG is the positive class for
    precision/recall/F1; AUC, Brier and ECE score the confidence against correctness."""
    tally = predictions if isinstance(predictions, PredictionTally) else PredictionTally.of(
        predictions)
    scored = tally.scored()
    regimes = {
        regime: ratio(_accuracy(tally.by_regime.get(regime, Calls(0, 0))), 5, 4,
                      f"{regime}_accuracy", undefined, why="no prediction in this regime")
        for regime in REGIMES
    }
    right = tally.right
    precision_, recall_, f1_ = _classification(tally.directions)
    return ModelFigures(
        samples=tally.samples,
        accuracy=ratio(_accuracy(Calls(tally.samples, right)), 5, 4, "accuracy", undefined),
        precision=ratio(precision_, 5, 4, "precision", undefined, why="no LONG prediction"),
        recall=ratio(recall_, 5, 4, "recall", undefined, why="no LONG outcome"),
        f1_score=ratio(f1_, 5, 4, "f1_score", undefined),
        auc_roc=ratio(_roc_auc(scored), 5, 4, "auc_roc", undefined,
                      why="confidence missing or all predictions right (or all wrong)"),
        brier_score=ratio(_brier(scored), 6, 5, "brier_score", undefined,
                          why="no confidence score"),
        expected_calibration_error=ratio(_calibration_error(scored), 6, 5,
                                         "expected_calibration_error", undefined,
                                         why="no confidence score"),
        regime_accuracy=regimes,
    )


def accuracy(predictions: Sequence[ScoredPrediction]) -> float | None:
    return _accuracy(Calls(len(predictions), sum(p.correct for p in predictions)))


def _accuracy(calls: Calls) -> float | None:
    return _fdiv(calls.right, calls.calls)


def _classification(
    directions: Counter[tuple[str, str]],
) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1 with LONG as the positive class, from (predicted, actual)
    counts."""
    counts: Counter[tuple[bool, bool]] = Counter()
    for (predicted, actual), n in directions.items():
        counts[predicted == "LONG", actual == "LONG"] += n
    tp, fp, fn = counts[True, True], counts[True, False], counts[False, True]
    return _fdiv(tp, tp + fp), _fdiv(tp, tp + fn), _fdiv(2 * tp, 2 * tp + fp + fn)


def precision(predictions: Sequence[ScoredPrediction]) -> float | None:
    return _classification(PredictionTally.of(predictions).directions)[0]


def recall(predictions: Sequence[ScoredPrediction]) -> float | None:
    return _classification(PredictionTally.of(predictions).directions)[1]


def f1(predictions: Sequence[ScoredPrediction]) -> float | None:
    return _classification(PredictionTally.of(predictions).directions)[2]


def _grouped(scored: Sequence[tuple[float, bool]]) -> list[tuple[float, Calls]]:
    """(confidence, correctness) pairs as their calls per confidence, ascending."""
    groups: dict[float, Calls] = {}
    for confidence, right in scored:
        groups[confidence] = _plus(groups.get(confidence), 1, int(right))
    return sorted(groups.items())


def roc_auc(scored: Sequence[tuple[float, bool]]) -> float | None:
    return _roc_auc(_grouped(scored))


def brier(scored: Sequence[tuple[float, bool]]) -> float | None:
    return _brier(_grouped(scored))


def calibration_error(scored: Sequence[tuple[float, bool]]) -> float | None:
    return _calibration_error(_grouped(scored))


def _roc_auc(scored: Sequence[tuple[float, Calls]]) -> float | None:
    """Probability that a right call has a higher confidence than a wrong one (ties count ½):
    the Mann-Whitney U statistic over average ranks. ``scored``: ascending confidences.

    Exact in floats: every partial sum is a multiple of ½ below 2**53 (under 10**8 calls)."""
    positives = sum(calls.right for _, calls in scored)
    negatives = sum(calls.calls for _, calls in scored) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum, ranked = 0.0, 0
    for _, calls in scored:
        average_rank = (ranked + 1 + ranked + calls.calls) / 2  # ranks share their mean
        rank_sum += average_rank * calls.right
        ranked += calls.calls
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _brier(scored: Sequence[tuple[float, Calls]]) -> float | None:
    """Mean squared difference between confidence and correctness (1 right, 0 wrong)."""
    squares = [((confidence - 1) ** 2, c.right) for confidence, c in scored]
    squares += [(confidence ** 2, c.calls - c.right) for confidence, c in scored]
    return _fdiv(exact_sum(squares), sum(c.calls for _, c in scored))


def _calibration_error(scored: Sequence[tuple[float, Calls]]) -> float | None:
    """Expected calibration error over CALIBRATION_BINS equal-width confidence bins.

    Bin k holds confidences in (k/10, (k+1)/10], the first also 0 (scikit-learn's
    calibration_curve binning). ECE = Σ over bins of (bin size / n) · |accuracy - mean conf|.
    """
    if not scored:
        return None
    sizes, rights = [0] * CALIBRATION_BINS, [0] * CALIBRATION_BINS
    members: list[list[tuple[float, int]]] = [[] for _ in range(CALIBRATION_BINS)]
    for confidence, calls in scored:
        k = _calibration_bin(confidence)
        sizes[k] += calls.calls
        rights[k] += calls.right
        members[k].append((confidence, calls.calls))
    total = sum(sizes)
    return math.fsum(
        sizes[k] / total * abs(rights[k] / sizes[k] - exact_sum(members[k]) / sizes[k])
        for k in range(CALIBRATION_BINS) if sizes[k])


@functools.lru_cache(maxsize=16_384)  # a DECIMAL(5, 4) confidence has 10,001 values
def _calibration_bin(confidence: float) -> int:
    index = max(math.ceil(round(confidence * CALIBRATION_BINS, 9)) - 1, 0)
    return min(index, CALIBRATION_BINS - 1)


def exact_sum(terms: Sequence[tuple[float, int]]) -> float:
    """Σ value x count, correctly rounded once: what ``math.fsum`` gives for each value
    repeated count times.

    Few repeats: ``math.fsum`` of them. Many: each float is a fraction whose denominator is a
    power of two, so all of them over the largest one sum exactly in integers, and int / int
    is correctly rounded."""
    if sum(count for _, count in terms) <= 4 * len(terms):
        return math.fsum([value for value, count in terms for _ in range(count)])
    ratios = [(value.as_integer_ratio(), count) for value, count in terms]
    denominator = max(d for (_, d), _ in ratios)
    return sum(n * (denominator // d) * count for (n, d), count in ratios) / denominator


# --- fitting values to their columns --------------------------------------------------------


def ratio(value: float | Decimal | None, precision: int, scale: int, column: str,
          undefined: Undefined, *, why: str = "no data") -> Decimal | None:
    """``value`` rounded to DECIMAL(precision, scale), or None (noted) if undefined or too big."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        undefined.note(column, why)
        return None
    exact = value if isinstance(value, Decimal) else Decimal(repr(value))
    return _quantize(exact, precision, scale, column, undefined)


def money(value: Decimal | None, column: str, undefined: Undefined,
          *, why: str = "no data") -> Decimal | None:
    """A DECIMAL(18, 4) money figure, or None (noted)."""
    if value is None:
        undefined.note(column, why)
        return None
    return _quantize(value, 18, 4, column, undefined)


def _quantize(value: Decimal | None, precision: int, scale: int, column: str,
              undefined: Undefined) -> Decimal | None:
    if value is None:
        return None
    limit, quantum = _bounds(precision, scale)
    too_big = abs(value) >= limit  # checked first: quantize would raise
    rounded = value if too_big else value.quantize(quantum, ROUND_HALF_EVEN)
    if too_big or abs(rounded) >= limit:
        undefined.note(column, f"beyond DECIMAL({precision}, {scale})")
        return None
    return rounded


@functools.cache
def _bounds(precision: int, scale: int) -> tuple[Decimal, Decimal]:
    """DECIMAL(precision, scale)'s exclusive limit and its quantum (about 20 of these per
    period or model day)."""
    return Decimal(10) ** (precision - scale), Decimal(1).scaleb(-scale)


def _round_int(value: Decimal | None, column: str, undefined: Undefined) -> int | None:
    if value is None:
        return None
    rounded = int(value.to_integral_value(rounding=ROUND_HALF_EVEN))
    if abs(rounded) > 2**31 - 1:
        undefined.note(column, "beyond INTEGER")
        return None
    return rounded


def _div(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if denominator == 0:
        return None
    return Decimal(numerator) / Decimal(denominator)


def _fdiv(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator
