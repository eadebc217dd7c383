"""`cie rollup` on the real database: hand-computed figures, incrementality, degenerate input."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from consumers.analytics import performance as perf
from consumers.analytics import rollup as rollup_module
from consumers.analytics.rollup import rollup, rollup_forever
from consumers.platform.db import connect, create_pool
from tests.support.builders import ROLLUP_SETTINGS, add_trade, at
from tests.support.cie import run_cie
from tests.support.clock import MONDAY
from tests.support.live_model import DIRECTIONS, FIGURES, as_columns
from tests.support.stack import Stack


@pytest.fixture
async def db(any_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(any_db)
    yield conn
    await conn.close()


async def hand_computed_trades(db: asyncpg.Connection) -> None:
    """Week of MONDAY (model m1, strategy s1), then the Monday after."""
    tue, thu, next_mon = (MONDAY + timedelta(days=n) for n in (1, 3, 7))
    await add_trade(db, exit_day=MONDAY, net="300", commission="10", slippage="0.01",
                    fill_latencies_ms=(100, 300))
    await add_trade(db, exit_day=MONDAY, net="-100", commission="5", slippage="0.03",
                    fill_latencies_ms=(None,))
    await add_trade(db, exit_day=tue, net="-500", commission="10", fill_latencies_ms=(50,))
    await add_trade(db, exit_day=thu, net="400", commission="10", slippage="0.02")
    await add_trade(db, exit_day=thu, net="0", commission="4", slippage="0")
    await add_trade(db, exit_day=next_mon, net="200", commission="2")
    await add_trade(db, exit_day=None, net="0")  # open: not counted anywhere
    await add_trade(db, exit_day=MONDAY, net="50", model="m2")  # another model version


async def period(db: asyncpg.Connection, period_type: str, start: date,
                 model: str = "m1") -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT * FROM strategy_performance WHERE strategy_id = 's1' AND model_version = $1 "
        "AND period_type = $2 AND period_start = $3", model, period_type, start)
    assert row is not None, (period_type, start)
    return dict(row)


def four(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.0001"))


def sharpe(returns: list[float]) -> float:
    return statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(252)


def sortino(returns: list[float]) -> float:
    downside = math.sqrt(sum(min(r, 0) ** 2 for r in returns) / len(returns))
    return statistics.mean(returns) / downside * math.sqrt(252)


def calmar(returns: list[float], drawdown: float) -> float:
    return (math.prod(1 + r for r in returns) ** (252 / len(returns)) - 1) / drawdown


async def test_week_has_hand_computed_figures_in_every_column(db: asyncpg.Connection) -> None:
    await hand_computed_trades(db)
    report = await rollup(db, ROLLUP_SETTINGS)
    # s1/m1: 4 exit days, 2 weeks, 1 month; s1/m2: 1 day, 1 week, 1 month
    assert report.strategy_periods_recomputed == 4 + 2 + 1 + 3

    week = await period(db, "WEEK", MONDAY)
    # equity from 10,000: Mon +200 -> 10,200; Tue -500 -> 9,700; Thu +400 -> 10,100
    returns = [200 / 10_000, -500 / 10_200, 400 / 9_700]
    drawdown = 500 / 10_200  # from Monday's 10,200 to Tuesday's 9,700, not recovered by Thu
    expected = {
        "total_trades": 5, "winning_trades": 2, "losing_trades": 2, "breakeven_trades": 1,
        "gross_profit": Decimal("700.0000"), "gross_loss": Decimal("-600.0000"),
        "net_pnl": Decimal("100.0000"), "total_commission": Decimal("39.0000"),
        "win_rate": Decimal("0.4000"), "profit_factor": Decimal("1.1667"),
        "avg_win": Decimal("350.0000"), "avg_loss": Decimal("-300.0000"),
        "avg_trade": Decimal("20.0000"), "largest_win": Decimal("400.0000"),
        "largest_loss": Decimal("-500.0000"),
        "max_drawdown": four(drawdown), "max_drawdown_duration_days": 3,  # Mon -> Thu
        "sharpe_ratio": four(sharpe(returns)), "sortino_ratio": four(sortino(returns)),
        "calmar_ratio": four(calmar(returns, drawdown)),
        "avg_slippage": Decimal("0.01500000"),  # (0.01 + 0.03 + 0.02 + 0) / 4 trades with one
        "avg_fill_time_ms": 150,  # (100 + 300 + 50) / 3 fills with order_submitted_at
    }
    assert {k: week[k] for k in expected} == expected
    assert week["max_drawdown"] == Decimal("0.0490")
    assert week["sharpe_ratio"] == Decimal("1.3700")  # mean 0.004073 / stdev 0.047190 · √252


async def test_month_day_and_other_model_version(db: asyncpg.Connection) -> None:
    await hand_computed_trades(db)
    await rollup(db, ROLLUP_SETTINGS)
    month = await period(db, "MONTH", MONDAY.replace(day=1))
    assert (month["total_trades"], month["net_pnl"]) == (6, Decimal("300.0000"))
    # equity 10,000 -> 10,200 -> 9,700 -> 10,100 -> 10,300: recovered on the Monday after
    assert month["max_drawdown_duration_days"] == 7
    returns = [200 / 10_000, -500 / 10_200, 400 / 9_700, 200 / 10_100]
    assert month["sharpe_ratio"] == four(sharpe(returns))

    monday = await period(db, "DAY", MONDAY)
    assert (monday["total_trades"], monday["net_pnl"], monday["max_drawdown"],
            monday["max_drawdown_duration_days"]) == (2, Decimal("200.0000"), Decimal(0), 0)
    # one daily return: Sharpe and Sortino undefined; no drawdown: Calmar undefined
    assert (monday["sharpe_ratio"], monday["sortino_ratio"], monday["calmar_ratio"]) == (
        None, None, None)

    tuesday = await period(db, "DAY", MONDAY + timedelta(days=1))
    assert (tuesday["win_rate"], tuesday["profit_factor"], tuesday["avg_win"],
            tuesday["largest_win"], tuesday["max_drawdown"]) == (
        Decimal(0), Decimal(0), None, None, Decimal("0.0500"))
    assert tuesday["calmar_ratio"] == four(calmar([-0.05], 0.05))

    other = await period(db, "WEEK", MONDAY, model="m2")
    assert (other["total_trades"], other["net_pnl"], other["profit_factor"],
            other["avg_loss"]) == (1, Decimal("50.0000"), None, None)


async def test_rerun_changes_nothing_and_late_trade_changes_only_its_periods(
    db: asyncpg.Connection,
) -> None:
    await hand_computed_trades(db)
    await rollup(db, ROLLUP_SETTINGS)
    before = {(r["model_version"], r["period_type"], r["period_start"]): dict(r)
              for r in await db.fetch("SELECT * FROM strategy_performance")}

    again = await rollup(db, ROLLUP_SETTINGS)
    assert again.marks == 0 and again.strategy_periods_recomputed == 0
    full = await rollup(db, ROLLUP_SETTINGS, full=True)  # recompute everything: same values
    assert full.strategy_periods_recomputed == len(before)
    after_full = {(r["model_version"], r["period_type"], r["period_start"]): dict(r)
                  for r in await db.fetch("SELECT * FROM strategy_performance")}
    assert after_full == before  # updated_at included: identical rows are not rewritten

    await add_trade(db, exit_day=MONDAY + timedelta(days=8), net="-40")  # the Tuesday after
    report = await rollup(db, ROLLUP_SETTINGS)
    assert report.strategy_periods_recomputed == 3
    after = {(r["model_version"], r["period_type"], r["period_start"]): dict(r)
             for r in await db.fetch("SELECT * FROM strategy_performance")}
    changed = {key for key in after if after[key] != before.get(key)}
    month = MONDAY.replace(day=1)  # MONDAY is in its month's first week: same month
    assert changed == {("m1", "DAY", MONDAY + timedelta(days=8)),
                       ("m1", "WEEK", MONDAY + timedelta(days=7)), ("m1", "MONTH", month)}
    assert after[("m1", "MONTH", month)]["net_pnl"] == Decimal("260.0000")


async def test_late_trade_counts_once_in_its_periods_and_its_model_day(
    db: asyncpg.Connection,
) -> None:
    """The strategy periods and the model day read their trades in one pass per model version
    (the day, for every strategy, and the rest of the month): no trade counts twice."""
    await hand_computed_trades(db)
    await add_trade(db, exit_day=MONDAY, net="70", strategy="s2")
    await rollup(db, ROLLUP_SETTINGS)
    await add_trade(db, exit_day=MONDAY, net="-30")  # s1, m1: s2 is not touched
    await rollup(db, ROLLUP_SETTINGS)

    assert await db.fetchval(
        "SELECT live_pnl_contribution FROM model_performance WHERE source = 'live' "
        "AND model_version = 'm1' AND evaluation_date = $1", MONDAY) == Decimal("240.0000")
    assert (await period(db, "DAY", MONDAY))["net_pnl"] == Decimal("170.0000")
    assert (await period(db, "WEEK", MONDAY))["net_pnl"] == Decimal("70.0000")
    assert (await period(db, "MONTH", MONDAY.replace(day=1)))["net_pnl"] == Decimal("270.0000")
    incremental = [dict(r) for r in await db.fetch(
        "SELECT * FROM strategy_performance ORDER BY 2, 3, 4, 5")]
    await rollup(db, ROLLUP_SETTINGS, full=True)
    assert [dict(r) for r in await db.fetch(
        "SELECT * FROM strategy_performance ORDER BY 2, 3, 4, 5")] == incremental


async def test_late_trades_months_apart_match_a_full_rollup(db: asyncpg.Connection) -> None:
    """Ranges more than a month apart are read by separate scans, ranges closer by one scan
    over the days between them: either way every touched period gets all its trades."""
    days = [MONDAY + timedelta(days=n) for n in (0, 16, 40, 120, 121, 200)]
    for n, day in enumerate(days):
        await add_trade(db, exit_day=day, net=str(10 * (n + 1)))
        await add_trade(db, exit_day=day, net=str(-3 * n), model="m2")
    await rollup(db, ROLLUP_SETTINGS)
    for day, model in ((days[0], "m1"), (days[2], "m2"), (days[3], "m1"), (days[5], "m2")):
        await add_trade(db, exit_day=day + timedelta(days=1), net="-7", model=model)
    report = await rollup(db, ROLLUP_SETTINGS)
    assert report.strategy_periods_recomputed == 4 * 3

    incremental = [dict(r) for r in await db.fetch(
        "SELECT * FROM strategy_performance ORDER BY 2, 3, 4, 5")]
    live = [dict(r) for r in await db.fetch(
        "SELECT * FROM model_performance ORDER BY model_version, evaluation_date")]
    await rollup(db, ROLLUP_SETTINGS, full=True)
    assert [dict(r) for r in await db.fetch(
        "SELECT * FROM strategy_performance ORDER BY 2, 3, 4, 5")] == incremental
    assert [dict(r) for r in await db.fetch(
        "SELECT * FROM model_performance ORDER BY model_version, evaluation_date")] == live


async def test_reopened_trade_removes_its_emptied_period(db: asyncpg.Connection) -> None:
    trade = await add_trade(db, exit_day=MONDAY, net="10")
    await rollup(db, ROLLUP_SETTINGS)
    assert await db.fetchval("SELECT count(*) FROM strategy_performance") == 3
    # a late, earlier fill re-derives the trade as still open
    await db.execute("UPDATE trade_outcomes SET exit_time = NULL, outcome_type = 'OPEN', "
                     "net_pnl = NULL WHERE trade_id = $1", trade)
    report = await rollup(db, ROLLUP_SETTINGS)
    assert report.strategy_periods_deleted == 3
    assert await db.fetchval("SELECT count(*) FROM strategy_performance") == 0


async def test_a_failure_while_a_query_is_in_flight_keeps_the_marks_and_the_connection(
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The live model figures are computed while the server groups the trades: if they fail,
    that query is cancelled, so the transaction rolls back and the connection stays usable."""
    await hand_computed_trades(db)

    def failing(*_: object) -> None:
        raise ArithmeticError("a figure failed")

    monkeypatch.setattr(rollup_module, "_model_figures", failing)
    with pytest.raises(ArithmeticError, match="a figure failed"):
        await rollup(db, ROLLUP_SETTINGS)
    monkeypatch.undo()
    assert await db.fetchval("SELECT count(*) FROM strategy_performance") == 0
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") > 0  # kept for the retry
    assert (await rollup(db, ROLLUP_SETTINGS)).strategy_periods_recomputed == 10


async def test_excursion_updates_do_not_mark_anything(db: asyncpg.Connection) -> None:
    trade = await add_trade(db, exit_day=MONDAY, net="10")
    await rollup(db, ROLLUP_SETTINGS)
    await db.execute("UPDATE trade_outcomes SET max_favorable_excursion = 5 WHERE trade_id = $1",
                     trade)
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0


async def test_degenerate_inputs_yield_null_and_a_log_line(db: asyncpg.Connection) -> None:
    # two days with the same daily return (zero variance) and no losing trade
    await add_trade(db, exit_day=MONDAY, net="100", strategy="flat")
    await add_trade(db, exit_day=MONDAY + timedelta(days=1), net="101", strategy="flat")
    # a single, enormous trade: its P&L fits DECIMAL(18, 4) but Calmar does not fit (8, 4)
    await add_trade(db, exit_day=MONDAY, net="90000000000000", strategy="huge")
    await add_trade(db, exit_day=MONDAY + timedelta(days=1), net="-1", strategy="huge")
    # two trades whose sum does not fit DECIMAL(18, 4)
    await add_trade(db, exit_day=MONDAY, net="90000000000000", strategy="overflow")
    await add_trade(db, exit_day=MONDAY, net="90000000000000", strategy="overflow")
    with capture_logs() as logs:
        await rollup(db, ROLLUP_SETTINGS)

    flat = await db.fetchrow("SELECT * FROM strategy_performance WHERE strategy_id = 'flat' "
                             "AND period_type = 'WEEK'")
    assert flat is not None
    assert (flat["sharpe_ratio"], flat["sortino_ratio"], flat["profit_factor"],
            flat["avg_loss"], flat["max_drawdown"]) == (None, None, None, None, Decimal(0))
    huge = await db.fetchrow("SELECT * FROM strategy_performance WHERE strategy_id = 'huge' "
                             "AND period_type = 'WEEK'")
    assert huge is not None
    assert huge["net_pnl"] == Decimal("89999999999999.0000")
    assert huge["calmar_ratio"] is None and huge["profit_factor"] is None
    overflow = await db.fetchrow("SELECT * FROM strategy_performance "
                                 "WHERE strategy_id = 'overflow' AND period_type = 'DAY'")
    assert overflow is not None
    assert overflow["net_pnl"] is None and overflow["gross_profit"] is None
    assert overflow["total_trades"] == 2

    reasons = {(e["column"], e["reason"]) for e in logs if e["event"] == "rollup.figure_undefined"}
    assert ("sharpe_ratio", "fewer than two daily returns or no variance") in reasons
    assert ("profit_factor", "beyond DECIMAL(8, 4)") in reasons
    assert ("net_pnl", "beyond DECIMAL(18, 4)") in reasons
    assert ("profit_factor", "no losing trade") in reasons


async def test_time_zone_puts_trades_in_local_days(db: asyncpg.Connection) -> None:
    # 02:00 UTC on Tuesday is 21:00 on Monday in New York
    await add_trade(db, exit_day=MONDAY + timedelta(days=1), exit_hour=2, net="10")
    await rollup(db, dataclasses.replace(ROLLUP_SETTINGS, time_zone="America/New_York"))
    days = await db.fetch("SELECT period_start FROM strategy_performance "
                          "WHERE period_type = 'DAY'")
    assert [r["period_start"] for r in days] == [MONDAY]


async def test_concurrent_rollups_and_writers_agree_with_one_run(any_db: str) -> None:
    conns = [await connect(any_db) for _ in range(3)]
    try:
        writer, first, second = conns
        await hand_computed_trades(writer)

        async def write_more() -> None:
            for n in range(20):
                await add_trade(writer, exit_day=MONDAY + timedelta(days=n % 10), net=str(n - 7))

        await asyncio.gather(rollup(first, ROLLUP_SETTINGS), rollup(second, ROLLUP_SETTINGS), write_more())
        await rollup(first, ROLLUP_SETTINGS)  # whatever the last concurrent run could not see
        stored = {tuple(r.values()) for r in await writer.fetch(
            "SELECT strategy_id, model_version, period_type, period_start, total_trades, "
            "net_pnl, sharpe_ratio, max_drawdown FROM strategy_performance")}
        await rollup(first, ROLLUP_SETTINGS, full=True)
        recomputed = {tuple(r.values()) for r in await writer.fetch(
            "SELECT strategy_id, model_version, period_type, period_start, total_trades, "
            "net_pnl, sharpe_ratio, max_drawdown FROM strategy_performance")}
        assert stored == recomputed
        assert await writer.fetchval("SELECT count(*) FROM rollup_pending") == 0
    finally:
        for conn in conns:
            await conn.close()


async def test_expired_periods_are_not_recomputed(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE retention_rules SET keep_for = '30 days' "
                     "WHERE table_name = 'trade_outcomes'")
    old = await add_trade(db, exit_day=date.today() - timedelta(days=60), net="10")
    await db.execute("INSERT INTO strategy_performance (strategy_id, model_version, period_type, "
                     "period_start, total_trades, net_pnl) VALUES ('s1', 'm1', 'DAY', $1, 7, 70)",
                     date.today() - timedelta(days=60))
    await db.execute("DELETE FROM trade_outcomes WHERE trade_id = $1", old)  # retention
    await rollup(db, ROLLUP_SETTINGS)
    kept = await db.fetchrow("SELECT total_trades, net_pnl FROM strategy_performance")
    assert kept is not None and tuple(kept) == (7, Decimal(70))


# --- model_performance ----------------------------------------------------------------------


async def add_prediction(db: asyncpg.Connection, *, predicted: str, actual: str,
                         confidence: str, symbol: str, minute: int, model: str = "m1") -> None:
    await db.execute(
        """INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
               predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
               feature_vector, actual_direction, actual_return, prediction_accuracy,
               validated_at)
           VALUES ($1, $2, 'gbm', $3, $4, 15, $5::text, $6, $7, $8::text, 0.001, $5::text = $8::text,
                   now())""",
        uuid.uuid4(), model, symbol, at(MONDAY, 14, minute), predicted, Decimal(confidence),
        json.dumps({"x": 1}), actual)


async def add_bar(db: asyncpg.Connection, symbol: str, minute: int, regime: str) -> None:
    await db.execute(
        """INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume,
               detected_regime) VALUES ($1, $2, 100, 101, 99, 100, 1000, $3)""",
        symbol, at(MONDAY, 14, minute), regime)


async def test_model_performance_live_row_and_offline_live_columns(
    db: asyncpg.Connection,
) -> None:
    await hand_computed_trades(db)
    await db.execute(
        """INSERT INTO model_performance (model_version, model_type, evaluation_date, accuracy,
               precision, testing_samples, status) VALUES ('m1', 'gbm', $1, 0.9, 0.8, 500,
               'production')""", MONDAY)
    await add_bar(db, "AAPL", 0, "trending_up")
    await add_bar(db, "MSFT", 0, "ranging")
    await add_bar(db, "NVDA", 0, "trending_down")
    await add_bar(db, "AAPL", 2, "volatile")  # after AAPL's prediction: not its regime
    await add_bar(db, "TSLA", 0, "volatile")  # 9 minutes before TSLA's: too old (5 at most)
    await add_prediction(db, predicted="LONG", actual="LONG", confidence="0.8", symbol="AAPL",
                         minute=1)
    await add_prediction(db, predicted="LONG", actual="SHORT", confidence="0.6", symbol="MSFT",
                         minute=2)
    await add_prediction(db, predicted="SHORT", actual="SHORT", confidence="0.7", symbol="NVDA",
                         minute=3)
    # no bar within 5 minutes before this one: no regime
    await add_prediction(db, predicted="NEUTRAL", actual="LONG", confidence="0.4", symbol="TSLA",
                         minute=9)
    await rollup(db, ROLLUP_SETTINGS)

    live = await db.fetchrow("SELECT * FROM model_performance WHERE source = 'live' "
                             "AND model_version = 'm1' AND evaluation_date = $1", MONDAY)
    assert live is not None
    expected = {
        "model_type": "gbm", "status": "production", "testing_samples": 4,
        "accuracy": Decimal("0.5000"),  # 2 of 4 right
        "precision": Decimal("0.5000"),  # LONG positive: TP 1, FP 1
        "recall": Decimal("0.5000"),  # TP 1, FN 1 (the NEUTRAL call on a LONG move)
        "f1_score": Decimal("0.5000"),
        "auc_roc": Decimal("1.0000"),  # right calls 0.8, 0.7 above wrong 0.6, 0.4
        "brier_score": Decimal("0.16250"),  # (0.04 + 0.36 + 0.09 + 0.16) / 4
        "expected_calibration_error": Decimal("0.37500"),  # one per bin: (.2+.6+.3+.4) / 4
        "trending_up_accuracy": Decimal("1.0000"), "trending_down_accuracy": Decimal("1.0000"),
        "ranging_accuracy": Decimal("0.0000"), "volatile_accuracy": None,
        "live_accuracy": Decimal("0.5000"),
        "live_pnl_contribution": Decimal("200.0000"),  # m1 trades closed on Monday
    }
    assert {k: live[k] for k in expected} == expected

    offline = await db.fetchrow("SELECT * FROM model_performance WHERE source = 'offline'")
    assert offline is not None
    assert (offline["accuracy"], offline["precision"], offline["testing_samples"]) == (
        Decimal("0.9000"), Decimal("0.8000"), 500)  # offline figures kept
    assert (offline["live_accuracy"], offline["live_pnl_contribution"]) == (
        Decimal("0.5000"), Decimal("300.0000"))  # every m1 call and trade since MONDAY

    # a day with closed trades and no validated prediction still gets its P&L row
    trade_only = await db.fetchrow(
        "SELECT testing_samples, accuracy, live_pnl_contribution FROM model_performance "
        "WHERE source = 'live' AND model_version = 'm1' AND evaluation_date = $1",
        MONDAY + timedelta(days=7))
    assert trade_only is not None
    assert tuple(trade_only) == (0, None, Decimal("200.0000"))

    assert (await rollup(db, ROLLUP_SETTINGS)).live_model_days_recomputed == 0  # nothing changed

    # an evaluation arriving after the facts is filled in by the next run
    await db.execute(
        """INSERT INTO model_performance (model_version, model_type, evaluation_date, accuracy)
           VALUES ('m1', 'gbm', $1, 0.7)""", MONDAY + timedelta(days=7))
    assert (await rollup(db, ROLLUP_SETTINGS)).offline_rows_updated == 1
    late = await db.fetchrow("SELECT accuracy, live_accuracy, live_pnl_contribution "
                             "FROM model_performance WHERE evaluation_date = $1 "
                             "AND source = 'offline'", MONDAY + timedelta(days=7))
    assert late is not None
    # no validated prediction since the Monday after; that day's trade made 200
    assert tuple(late) == (Decimal("0.7000"), None, Decimal("200.0000"))


async def test_live_model_figures_are_the_row_by_row_figures_of_the_days_predictions(
    db: asyncpg.Connection,
) -> None:
    """The server tallies a day's predictions (counts per confidence, directions, regime); the
    figures equal model_figures over every prediction as a row, to the last digit. Half of
    the predictions carry the regime the validator recorded (start_regime, 'none' for no
    regime); the others' are found from the bars, as for rows validated before schema/24."""
    rng = random.Random(43)
    regimes = {f"S{n}": rng.choice(perf.REGIMES) for n in range(10)}  # S10..S19: no bar
    for symbol, regime in regimes.items():
        await add_bar(db, symbol, 0, regime)
    rows, scored = [], []
    for n in range(3_000):
        symbol, predicted, actual = (f"S{n % 20}", rng.choice(DIRECTIONS),
                                     rng.choice(DIRECTIONS))
        confidence = (None if n % 50 == 0 else  # repeats, bin edges, and any 4-digit value
                      Decimal(rng.choice([rng.randint(0, 10_000), rng.randint(0, 10) * 1_000,
                                          3_333])).scaleb(-4))
        recorded = (regimes.get(symbol) or "none") if n % 2 else None
        rows.append((uuid.uuid4(), "mt", "gbm", symbol, at(MONDAY, 14, n % 5) + timedelta(seconds=n % 60), 15,
                     predicted, confidence, "{}", actual, Decimal("0.001"),
                     predicted == actual, at(MONDAY, 15), recorded))
        scored.append(perf.ScoredPrediction(predicted, actual, confidence, regimes.get(symbol)))
    await db.copy_records_to_table("model_predictions", records=rows, columns=[
        "prediction_id", "model_version", "model_type", "symbol", "predicted_at",
        "prediction_horizon_minutes", "predicted_direction", "confidence_score",
        "feature_vector", "actual_direction", "actual_return", "prediction_accuracy",
        "validated_at", "start_regime"])
    await rollup(db, ROLLUP_SETTINGS)

    live = await db.fetchrow("SELECT * FROM model_performance WHERE model_version = 'mt'")
    assert live is not None
    expected = perf.model_figures(scored, perf.Undefined())
    assert {column: live[column] for column in FIGURES} == as_columns(expected)
    assert expected.auc_roc is not None and expected.regime_accuracy["volatile"] is not None


async def test_a_recorded_start_regime_is_counted_as_recorded(db: asyncpg.Connection) -> None:
    """The validator's start_regime stands for the bars: a bar's regime that differs (or a
    prediction without any bar) does not change it, and 'none' counts in no regime."""
    await add_bar(db, "AAPL", 0, "trending_up")
    for minute, recorded in ((1, "volatile"), (2, "none"), (3, None)):
        await add_prediction(db, predicted="LONG", actual="LONG", confidence="0.8",
                             symbol="AAPL", minute=minute, model="mr")
        await db.execute("UPDATE model_predictions SET start_regime = $1 "
                         "WHERE model_version = 'mr' AND predicted_at = $2",
                         recorded, at(MONDAY, 14, minute))
    await add_prediction(db, predicted="LONG", actual="SHORT", confidence="0.6",
                         symbol="NOBAR", minute=4, model="mr")
    await db.execute("UPDATE model_predictions SET start_regime = 'volatile' "
                     "WHERE symbol = 'NOBAR'")
    await rollup(db, ROLLUP_SETTINGS)
    live = await db.fetchrow(
        "SELECT testing_samples, trending_up_accuracy, volatile_accuracy, ranging_accuracy "
        "FROM model_performance WHERE model_version = 'mr'")
    assert live is not None
    # volatile: minute 1 (right) and NOBAR (wrong); trending_up: minute 3 from its bar
    assert tuple(live) == (4, Decimal("1.0000"), Decimal("0.5000"), None)


# --- how it runs ----------------------------------------------------------------------------


async def test_regime_bar_found_in_the_age_window_across_time_bins(
    db: asyncpg.Connection,
) -> None:
    """Bars are pre-filtered by 5-minute bins: a bar in the bin before its prediction's still
    counts, up to the age limit (inclusive)."""
    await add_bar(db, "AMZN", 4, "volatile")  # 2 minutes before, in the bin before
    await add_bar(db, "META", 5, "ranging")  # exactly 5 minutes before
    await add_bar(db, "NFLX", 4, "trending_up")  # 6 minutes before: too old
    await add_prediction(db, predicted="LONG", actual="LONG", confidence="0.8", symbol="AMZN",
                         minute=6, model="m3")
    await add_prediction(db, predicted="SHORT", actual="LONG", confidence="0.6", symbol="META",
                         minute=10, model="m3")
    await add_prediction(db, predicted="LONG", actual="LONG", confidence="0.7", symbol="NFLX",
                         minute=10, model="m3")
    await rollup(db, ROLLUP_SETTINGS)
    live = await db.fetchrow(
        "SELECT trending_up_accuracy, trending_down_accuracy, ranging_accuracy, "
        "volatile_accuracy FROM model_performance WHERE model_version = 'm3'")
    assert live is not None
    assert tuple(live) == (None, None, Decimal("0.0000"), Decimal("1.0000"))


@contextlib.asynccontextmanager
async def login(url: str, *roles: str) -> AsyncIterator[str]:
    """The URL of a new login user in these group roles and no other (the stack trusts
    loopback, so it needs no password); the user is dropped afterwards."""
    name = f"cie_login_{uuid.uuid4().hex[:10]}"
    conn = await connect(url)
    try:
        await conn.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {", ".join(roles)}')
        parts = urlsplit(url)
        yield parts._replace(netloc=f"{name}@{parts.netloc.rpartition('@')[2]}").geturl()
    finally:
        await conn.execute(f'DROP ROLE "{name}"')
        await conn.close()


async def test_cli_rollup_uses_the_settings(any_db: str, stack: Stack) -> None:
    """Run as a login in cie_rollup alone: the role has every grant the rollup needs."""
    conn = await connect(any_db)
    try:
        await add_trade(conn, exit_day=MONDAY, net="10")
        await add_trade(conn, exit_day=MONDAY + timedelta(days=1), net="-5")
        async with login(any_db, "cie_rollup") as rollup_url:
            await run_cli_rollup(rollup_url, stack)
        week = await period(conn, "WEEK", MONDAY)
        # drawdown from 1,010 to 1,005 on a capital base of 1,000 (not the default 100,000)
        assert week["max_drawdown"] == four(5 / 1010)
        assert await conn.fetchval("SELECT count(*) FROM rollup_pending") == 0
        assert await conn.fetchval("SELECT count(*) FROM command_runs WHERE command = 'rollup'")
    finally:
        await conn.close()


async def run_cli_rollup(url: str, stack: Stack) -> None:
    code, output = await run_cie("rollup", env={
        "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
        "CIE_ROLLUP_CAPITAL_BASE": "1000", "CIE_LOG_FORMAT": "json"}, timeout=60)
    assert code == 0, output
    assert '"rollup.done"' in output


async def test_validator_can_roll_up_on_its_own_period(any_db: str) -> None:
    """As the validator's login: cie_ingest for its own writes, cie_rollup for the rollup."""
    async with login(any_db, "cie_ingest", "cie_rollup") as validator:
        conn = await connect(any_db)
        pool = await create_pool(validator)
        stop = asyncio.Event()
        task = asyncio.create_task(rollup_forever(pool, ROLLUP_SETTINGS, every=0.2, stop=stop))
        try:
            await add_trade(conn, exit_day=MONDAY, net="10")
            deadline = time.monotonic() + 15
            while await conn.fetchval("SELECT count(*) FROM strategy_performance") < 3:
                assert time.monotonic() < deadline, "the periodic rollup never ran"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            await pool.close()
            await conn.close()
