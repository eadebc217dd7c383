"""Hand-made bars and the daily summary they must produce, shared by both schema paths' tests."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from tests.support.clock import TODAY

BAR_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "atr_14",
               "rsi_14", "vix", "detected_regime", "regime_confidence")


def utc_day(days_ago: int) -> datetime:
    """Midnight UTC ``days_ago`` days before the run's TODAY (one day for the whole run, so
    two calls in a test agree even across midnight)."""
    return datetime.combine(TODAY - timedelta(days=days_ago), time(0), UTC)


def three_bars(symbol: str, day: datetime) -> list[tuple[Any, ...]]:
    """Three one-minute bars at 14:00-14:02 UTC, listed out of time order on purpose."""
    t = day + timedelta(hours=14)
    d = Decimal
    return [
        (symbol, t + timedelta(minutes=2), d("101.5"), d("103"), d("101"), d("102.25"), 3000,
         d("3.0"), d("80"), d("24"), "trending_up", d("1.0")),
        (symbol, t, d("100"), d("101"), d("99"), d("100.5"), 1000,
         d("1.0"), d("40"), d("20"), "ranging", d("0.6")),
        (symbol, t + timedelta(minutes=1), d("100.5"), d("102"), d("100"), d("101.5"), 2000,
         d("2.0"), d("60"), d("22"), "trending_up", d("0.8")),
    ]


def expected_summary(symbol: str, day: datetime) -> dict[str, Any]:
    d = Decimal
    return dict(symbol=symbol, day=day, open=d("100"), high=d("103"), low=d("99"),
                close=d("102.25"), volume=d(6000), bar_count=3, avg_atr_14=d(2), avg_rsi_14=d(60),
                avg_volatility_20d=None, avg_vix=d(22), avg_regime_confidence=d("0.8"),
                dominant_regime="trending_up")


async def insert_bars(conn: asyncpg.Connection, bars: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table("market_conditions", records=bars, columns=BAR_COLUMNS)


async def summaries(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM market_daily_summary ORDER BY symbol, day")
    return [dict(row) for row in rows]


def same_numbers(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Equal field by field; numbers compared by value (avg() picks its own scale)."""
    return actual.keys() == expected.keys() and all(
        actual[k] == expected[k] for k in expected
    )
