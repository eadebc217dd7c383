"""A/B test evaluation (`cie evaluate-ab`, and every CIE_AB_EVALUATE_SECONDS in `cie schedule`).

For each running test, each arm's figures come from its closed trades since the test started
(trades entered at or after ``started_at``; a strategy test's versions are strategy ids, a
model or params test's are model versions), computed by the rollups' own code
(``performance.strategy_figures``), so an arm's Sharpe ratio here is the one
strategy_performance would show for the same trades. ``improvement_percent`` is the success
metric's change from control to treatment, in the direction that is better for it.

A promotion is not decided on noise: Welch's t-test on the arms' per-trade returns (net P&L
over what the trade put at stake) must reject "no difference" at CIE_AB_SIGNIFICANCE_LEVEL.
While the test runs, its metrics are refreshed; once its scheduled duration is over it is
``promoted`` (the success metric improved by at least the test's minimum and the returns
differ significantly in the treatment's favour) or ``rejected`` (anything else, including too
few trades). At any time a treatment significantly worse, by at least the minimum, is rolled
back (``rollback``). A conclusion writes an improvement event (ab_test_promoted, …) in the
same transaction and publishes it on improvement-events before committing; the notifier posts
it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import asyncpg
import msgspec
import structlog

from consumers.analytics.performance import (
    RatioSettings,
    StrategyFigures,
    TradeDay,
    Undefined,
    strategy_figures,
)
from consumers.analytics.rollup import RollupSettings
from consumers.analytics.significance import Welch, welch_t_test
from consumers.improvement.announce import Announcer
from consumers.platform import metrics
from consumers.platform.db import Conn, queries
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

_json = msgspec.json.Encoder(decimal_format="number")

# +1: higher is better; -1: lower is better (a drawdown).
DIRECTION: dict[str, int] = {
    "sharpe_ratio": 1, "sortino_ratio": 1, "calmar_ratio": 1, "win_rate": 1,
    "profit_factor": 1, "net_pnl": 1, "avg_trade": 1, "max_drawdown": -1,
}
IMPROVEMENT_LIMIT = Decimal("9999.99")  # ab_tests.improvement_percent is DECIMAL(6, 2)

Status = Literal["running", "promoted", "rejected", "rollback"]


@dataclass(frozen=True)
class AbTestSettings:
    ratios: RatioSettings
    time_zone: str
    significance_level: float  # the p-value below which a difference is taken as real
    min_trades: int  # per arm, to decide anything
    # A test short of trades at the end of its duration runs on, up to this many durations.
    max_duration_factor: Decimal = Decimal(2)

    @classmethod
    def from_settings(cls, settings: Settings) -> AbTestSettings:
        rollup = RollupSettings.from_settings(settings)  # the arms' figures as the rollups' own
        return cls(rollup.ratios, rollup.time_zone, float(settings.ab_significance_level),
                   settings.ab_min_trades, settings.ab_max_duration_factor)


@dataclass(frozen=True)
class Arm:
    figures: StrategyFigures
    returns: list[float]


@dataclass(frozen=True)
class Verdict:
    test_id: str
    status: Status
    improvement_percent: Decimal | None
    p_value: float | None
    conclusion: str | None


async def evaluate(conn: Conn, rules: AbTestSettings, announce: Announcer) -> list[Verdict]:
    """Evaluate every running test once; each in its own transaction, which commits a
    conclusion only after its improvement event is published."""
    verdicts = []
    for row in await conn.fetch(queries("abtest")["running_tests"]):
        async with conn.transaction():
            test = await conn.fetchrow(queries("abtest")["lock_running_test"], row["test_id"],
                                       float(rules.max_duration_factor))
            if test is None:  # concluded meanwhile, or another evaluator holds it
                continue
            verdict = await _evaluate_test(conn, test, rules, announce)
        verdicts.append(verdict)
        metrics.AB_EVALUATIONS.labels(verdict.status).inc()
        if verdict.status != "running":
            log.info("abtest.concluded", **asdict(verdict))
    return verdicts


async def _evaluate_test(conn: Conn, test: asyncpg.Record, rules: AbTestSettings,
                         announce: Announcer) -> Verdict:
    at: datetime = test["evaluated_at"]
    control = await _arm(conn, test, test["control_version"], rules)
    treatment = await _arm(conn, test, test["treatment_version"], rules)
    metric: str = test["success_metric"]
    improvement = improvement_percent(metric, getattr(control.figures, metric, None),
                                      getattr(treatment.figures, metric, None))
    welch = welch_t_test(control.returns, treatment.returns)
    trades = (len(control.returns), len(treatment.returns))
    longest_over = test["longest_until"] <= at
    status, conclusion = decide(
        improvement=improvement, welch=welch, minimum=test["minimum_improvement_percent"],
        duration_over=test["duration_over"], longest_over=longest_over, trades=trades,
        rules=rules)
    control_metrics = _metrics(control)
    treatment_metrics = {**_metrics(treatment), "significance": _significance(welch, rules)}
    if status == "running" and test["duration_over"]:  # says why it is not decided yet
        treatment_metrics["waiting_for_trades"] = {
            "control": trades[0], "treatment": trades[1], "needed": rules.min_trades,
            "until": test["longest_until"].isoformat()}
    sql = queries("abtest")
    await conn.execute(sql["record_evaluation"], test["test_id"], _encode(control_metrics),
                       _encode(treatment_metrics), improvement, status,
                       None if status == "running" else at, conclusion)
    if status != "running":
        announced = await conn.fetchval(
            sql["announce_conclusion"], status, at, test["test_type"], str(test["test_id"]),
            _encode({"version": test["control_version"]}),
            _encode({"version": test["treatment_version"]}),
            _encode(control_metrics), _encode(treatment_metrics),
            _encode({"success_metric": metric, "improvement_percent": improvement,
                     "p_value": welch.p_value if welch else None, "test": test["test_name"],
                     "conclusion": conclusion}))
        await announce(conn, [announced] if announced else [])
    return Verdict(str(test["test_id"]), status, improvement,
                   welch.p_value if welch else None, conclusion)


def decide(*, improvement: Decimal | None, welch: Welch | None, minimum: Decimal,
           duration_over: bool, longest_over: bool, trades: tuple[int, int],
           rules: AbTestSettings) -> tuple[Status, str | None]:
    """The test's status after this evaluation, and why (ab_tests.conclusion, 200 chars).
    ``longest_over``: the test has run ``max_duration_factor`` times its duration."""
    enough = min(trades) >= rules.min_trades
    significant = welch is not None and welch.p_value < rules.significance_level
    p = f"p={welch.p_value:.4f}" if welch else "p undefined"
    change = "undefined" if improvement is None else f"{improvement:+}%"
    if enough and significant and improvement is not None and improvement <= -minimum:
        assert welch is not None
        if welch.difference < 0:
            return "rollback", f"treatment worse: {change} ({p}, n={trades[0]}/{trades[1]})"
    if not duration_over:
        return "running", None
    if not enough and not longest_over:
        return "running", None  # runs on, waiting for trades
    if not enough:
        return "rejected", (f"inconclusive, too few trades: {trades[0]} control, {trades[1]} "
                            f"treatment (at least {rules.min_trades} each)")
    if improvement is not None and improvement >= minimum and significant:
        assert welch is not None
        if welch.difference > 0:
            return "promoted", f"improved {change} ({p}, n={trades[0]}/{trades[1]})"
    return "rejected", (f"not better by {minimum}% with significance: {change} ({p}, "
                        f"n={trades[0]}/{trades[1]})")


def improvement_percent(metric: str, control: Decimal | int | None,
                        treatment: Decimal | int | None) -> Decimal | None:
    """Change of ``metric`` from control to treatment in percent of |control|, positive when
    better; None when undefined (a figure missing, control 0) or beyond DECIMAL(6, 2)."""
    if control is None or treatment is None or control == 0:
        return None
    change = DIRECTION[metric] * (Decimal(treatment) - Decimal(control)) / abs(Decimal(control))
    try:
        percent = (change * 100).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None
    return percent if abs(percent) <= IMPROVEMENT_LIMIT else None


async def _arm(conn: Conn, test: asyncpg.Record, version: str, rules: AbTestSettings) -> Arm:
    rows = await conn.fetch(queries("abtest")["arm_days"], test["test_type"], version,
                            test["started_at"], test["evaluated_at"], rules.time_zone)
    days = [TradeDay(**{k: v for k, v in row.items() if k != "trade_returns"}) for row in rows]
    returns = [r for row in rows for r in row["trade_returns"] if r is not None]
    return Arm(strategy_figures(days, rules.ratios, Undefined()), returns)


def _metrics(arm: Arm) -> dict[str, Any]:
    figures = {k: v for k, v in msgspec.structs.asdict(arm.figures).items() if v is not None}
    return {**figures, "trades": len(arm.returns)}


def _significance(welch: Welch | None, rules: AbTestSettings) -> dict[str, Any]:
    base: dict[str, Any] = {"test": "welch_t", "level": rules.significance_level}
    if welch is None:
        return {**base, "defined": False}
    return {**base, "defined": True, **asdict(welch)}


def _encode(value: Any) -> str:
    return _json.encode(value).decode()

