"""The server's strategy figures (schema/queries/rollup.sql strategy_periods) against their
definition, performance.strategy_figures, to the last digit of every column.

Varied trade days at full precision: ties at every column's last digit (half to even), losing
streaks that exhaust the capital base, zero variance, figures too big for their columns, days
without wins, losses, slippage or timed fills. The same days go through both, and each
period's figures and the reasons its NULL figures are logged with must agree.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from consumers.analytics import performance as perf
from consumers.analytics.performance import RatioSettings, TradeDay
from consumers.platform.db import connect, queries

FIRST_DAY = date(2026, 2, 23)  # a Monday: weeks and months of several days each
SPAN_DAYS = 45
SETTINGS = [  # (capital base, periods a year, annual risk-free rate)
    RatioSettings(Decimal(100_000), 252, Decimal("0.04")),
    RatioSettings(Decimal("2500.5"), 365, Decimal(0)),  # small: losing streaks exhaust it
    RatioSettings(Decimal("1000000.1234"), 252, Decimal("0.0375")),
]


@pytest.fixture
async def db(any_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(any_db)
    yield conn
    await conn.close()


def amount(rng: random.Random, scale: int = 4) -> Decimal:
    """A positive amount at full precision, now and then a round one or a huge one."""
    kind = rng.random()
    if kind < 0.1:
        return Decimal(rng.randint(1, 50))
    if kind < 0.13:
        return Decimal(rng.randint(10**17, 10**18 - 1)).scaleb(-4)
    return Decimal(rng.randint(1, 5 * 10**8)).scaleb(-scale)


def trade_day(rng: random.Random, day: date) -> TradeDay:
    if rng.random() < 0.08:  # a tie: 1 / 32 = 0.03125, and an average of x.xxxx5
        return TradeDay(day=day, trades=32, wins=1, losses=0, breakevens=31,
                        gross_profit=Decimal("0.0016"), gross_loss=Decimal(0),
                        net_pnl=Decimal("0.0016"), commission=Decimal("0.0016"),
                        largest_win=Decimal("0.0016"), largest_loss=None,
                        slippage_sum=Decimal("0.00000001"), slippage_count=2,
                        fill_latency_us_sum=2500, fill_latency_count=1)
    trades = rng.randint(1, 12)
    wins = rng.randint(0, trades)
    losses = rng.randint(0, trades - wins)
    win_amounts = [amount(rng) for _ in range(wins)]
    loss_amounts = [-amount(rng) for _ in range(losses)]
    slipped = rng.randint(0, trades)
    timed = rng.choice([0, rng.randint(1, 2 * trades)])
    return TradeDay(
        day=day, trades=trades, wins=wins, losses=losses, breakevens=trades - wins - losses,
        gross_profit=sum(win_amounts, Decimal(0)), gross_loss=sum(loss_amounts, Decimal(0)),
        net_pnl=sum(win_amounts + loss_amounts, Decimal(0)),
        commission=sum((amount(rng) for _ in range(trades)), Decimal(0)),
        largest_win=max(win_amounts, default=None), largest_loss=min(loss_amounts, default=None),
        slippage_sum=Decimal(rng.randint(-10**9, 10**9)).scaleb(-8),
        slippage_count=slipped if slipped else 0,
        fill_latency_us_sum=rng.randint(0, 10**9) if timed else 0, fill_latency_count=timed)


def strategy_days(rng: random.Random) -> list[TradeDay]:
    days = sorted(rng.sample(range(SPAN_DAYS), rng.randint(1, 30)))
    if rng.random() < 0.1:  # the same return every day: no variance
        pnl = Decimal(rng.randint(1, 10**6)).scaleb(-4)
        return [TradeDay(day=FIRST_DAY + timedelta(days=d), trades=1, wins=1, losses=0,
                         breakevens=0, gross_profit=pnl, gross_loss=Decimal(0), net_pnl=pnl,
                         commission=Decimal(0), largest_win=pnl, largest_loss=None,
                         slippage_sum=Decimal(0), slippage_count=0, fill_latency_us_sum=0,
                         fill_latency_count=0) for d in days[:2]]
    return [trade_day(rng, FIRST_DAY + timedelta(days=d)) for d in days]


async def server_figures(db: asyncpg.Connection, days: dict[tuple[str, str], list[TradeDay]],
                         ratios: RatioSettings) -> tuple[dict[tuple[object, ...], asyncpg.Record],
                                                         Counter[tuple[str, str]]]:
    """strategy_periods over ``days`` (every period they touch), in a transaction rolled back."""
    sql = queries("rollup")
    wanted = sorted({(*key, period_type, perf.period_start(d.day, period_type))
                     for key, key_days in days.items() for d in key_days
                     for period_type in perf.PERIOD_TYPES})
    tr = db.transaction()
    await tr.start()
    try:
        await db.execute(sql["trade_days_table"])
        await db.copy_records_to_table("rollup_trade_days", records=[
            (*key, *(getattr(d, f) for f in TradeDay.__struct_fields__))
            for key, key_days in days.items() for d in key_days])
        reported = await db.fetch(
            sql["strategy_periods"], *([w[i] for w in wanted] for i in range(4)),
            ratios.capital_base, ratios.periods_per_year,
            float(ratios.risk_free_rate) / ratios.periods_per_year)
        stored = {(r["strategy_id"], r["model_version"], r["period_type"], r["period_start"]): r
                  for r in await db.fetch("SELECT * FROM strategy_performance")}
    finally:
        await tr.rollback()
    assert {r["kind"]: r["n"] for r in reported if r["kind"] != "undefined"} == {
        "recomputed": len(wanted), "deleted": 0}
    notes = Counter({(r["column_name"], r["reason"]): r["n"]
                     for r in reported if r["kind"] == "undefined"})
    return stored, notes


@pytest.mark.parametrize("settings_index", range(len(SETTINGS)))
async def test_server_figures_are_the_reference_figures(db: asyncpg.Connection,
                                                        settings_index: int) -> None:
    rng = random.Random(20261207 + settings_index)
    ratios = SETTINGS[settings_index]
    days = {(f"s{n}", rng.choice(["m1", "m2"])): strategy_days(rng) for n in range(80)}
    stored, notes = await server_figures(db, days, ratios)

    expected_notes: Counter[tuple[str, str]] = Counter()
    periods: dict[tuple[object, ...], list[TradeDay]] = defaultdict(list)
    for key, key_days in days.items():
        for d in key_days:
            for period_type in perf.PERIOD_TYPES:
                periods[(*key, period_type, perf.period_start(d.day, period_type))].append(d)
    mismatches = []
    for period, period_days in periods.items():
        undefined = perf.Undefined()
        figures = perf.strategy_figures(period_days, ratios, undefined)
        expected_notes.update(undefined.reasons)
        row = stored[period]
        mismatches += [(period, field, value, row[field])
                       for field, value in zip(perf.StrategyFigures.__struct_fields__,
                                               msgspec.structs.astuple(figures), strict=True)
                       if row[field] != value or type(row[field]) is not type(value)]
    assert mismatches == []
    assert notes == expected_notes
    # the cases the data is built for did occur
    built_for = {("sharpe_ratio", "fewer than two daily returns or no variance"),
                 ("net_pnl", "beyond DECIMAL(18, 4)"), ("profit_factor", "no losing trade")}
    if ratios.capital_base < 10_000:
        built_for.add(("sharpe_ratio, sortino_ratio, calmar_ratio", "capital base exhausted"))
    assert built_for <= set(notes)
    assert any(row["win_rate"] == Decimal("0.0312") for row in stored.values())  # not 0.0313
