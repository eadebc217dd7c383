"""The validator's SQL against the plain-Python reference, on random bars, predictions and
trades (hypothesis), and two validators at once against one."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.analytics import validator
from consumers.platform.db import create_pool
from tests.support import validator_reference as reference
from tests.support.cie import cie_environment
from tests.support.clock import T0 as T0_1430
from tests.support.harness import eventually
from tests.support.ports import log_text
from tests.support.stack import NewTopics, Stack, admin_execute, clone, database_url

T0 = T0_1430 - timedelta(minutes=30)
SYMBOLS = ("AAA", "BBB")


@dataclass(frozen=True)
class World:
    # minute -> close, high, low, regime
    bars: dict[str, dict[int, tuple[Decimal, Decimal, Decimal, str | None]]]
    predictions: list[tuple[str, int, int, str | None]]
    trades: list[tuple[str, str, int, int | None, Decimal, int]]
    gap_seconds: int
    band: Decimal


# a few round prices make ties and returns exactly on the band edges common
price = st.one_of(
    st.sampled_from([Decimal("100"), Decimal("100.05"), Decimal("99.95"), Decimal("101")]),
    st.integers(100, 100_000).map(lambda cents: Decimal(cents) / 100))
regime = st.sampled_from([None, "trending_up", "trending_down", "ranging", "volatile"])
bar = st.tuples(price, st.integers(0, 500), st.integers(0, 500), regime).map(
    lambda t: (t[0], t[0] + Decimal(t[1]) / 100, max(Decimal("0.01"), t[0] - Decimal(t[2]) / 100),
               t[3]))
worlds = st.builds(
    World,
    bars=st.fixed_dictionaries({s: st.dictionaries(st.integers(0, 40), bar, max_size=30)
                                for s in SYMBOLS}),
    predictions=st.lists(st.tuples(
        st.sampled_from(SYMBOLS), st.integers(0, 40), st.sampled_from([1, 3, 5, 15]),
        st.sampled_from(["LONG", "SHORT", "NEUTRAL", None])), max_size=25),
    trades=st.lists(st.tuples(
        st.sampled_from(SYMBOLS), st.sampled_from(["LONG", "SHORT"]), st.integers(0, 30),
        st.one_of(st.none(), st.integers(0, 10)), price, st.integers(1, 1000),
    ).map(lambda t: (t[0], t[1], t[2], None if t[3] is None else t[2] + t[3], t[4], t[5])),
        max_size=8),
    gap_seconds=st.sampled_from([60, 120, 300]),
    band=st.sampled_from([Decimal(0), Decimal("0.0005"), Decimal("0.01")]),
)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


async def check(url: str, world: World, lookup_past_bars: int) -> None:
    rules = validator.ValidatorSettings(gap_tolerance=timedelta(seconds=world.gap_seconds),
                            neutral_band=world.band, max_horizon=timedelta(days=1),
                            ingest_wait=timedelta(0), lookup_past_bars=lookup_past_bars)
    pool = await create_pool(url)
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE market_conditions, model_predictions, trade_outcomes")
            await conn.copy_records_to_table(
                "market_conditions", columns=("symbol", "timestamp", "open", "high", "low",
                                              "close", "volume", "detected_regime"),
                records=[(s, at(m), c, h, lo, c, 1, g) for s, bars in world.bars.items()
                         for m, (c, h, lo, g) in bars.items()])
            ids = [uuid.uuid4() for _ in world.predictions]
            await conn.copy_records_to_table(
                "model_predictions", columns=("prediction_id", "model_version", "model_type",
                                              "symbol", "predicted_at",
                                              "prediction_horizon_minutes",
                                              "predicted_direction", "feature_vector"),
                records=[(i, "v", "direction", s, at(m), h, d, "{}")
                         for i, (s, m, h, d) in zip(ids, world.predictions, strict=True)])
            trade_ids = [uuid.uuid4() for _ in world.trades]
            await conn.copy_records_to_table(
                "trade_outcomes", columns=("trade_id", "strategy_id", "model_version", "symbol",
                                           "direction", "entry_time", "exit_time",
                                           "entry_price", "quantity"),
                records=[(i, "s", "v", s, d, at(e), None if x is None else at(x), p, q)
                         for i, (s, d, e, x, p, q) in zip(trade_ids, world.trades, strict=True)])
        await validator.sweep(pool, rules, batch=7)
        async with pool.acquire() as conn, conn.transaction():
            await validator.update_excursions(conn, trade_ids)
        async with pool.acquire() as conn:
            stored = {r["prediction_id"]: r for r in await conn.fetch("SELECT * FROM model_predictions")}
            trades = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM trade_outcomes")}
    finally:
        await pool.close()

    for prediction_id, (symbol, minute, horizon, direction) in zip(ids, world.predictions, strict=True):
        closes = {at(m): c for m, (c, _, _, _) in world.bars[symbol].items()}
        expected = reference.outcome(closes, at(minute), horizon, direction,
                                     timedelta(seconds=world.gap_seconds), world.band)
        row = stored[prediction_id]
        actual = None if row["validated_at"] is None else (
            row["actual_return"], row["actual_direction"], row["prediction_accuracy"])
        assert actual == expected, (symbol, minute, horizon, direction)
        if expected is not None:  # the start bar's regime comes with the outcome
            regimes = {at(m): g for m, (_, _, _, g) in world.bars[symbol].items()}
            assert row["start_regime"] == reference.start_regime(
                regimes, at(minute), timedelta(seconds=world.gap_seconds)), (symbol, minute)

    for trade_id, (symbol, direction, entry, exit_, entry_price, quantity) in zip(
            trade_ids, world.trades, strict=True):
        highs_lows = {at(m): (h, lo) for m, (_, h, lo, _) in world.bars[symbol].items()}
        expected_excursions = reference.excursions(
            highs_lows, direction, at(entry), None if exit_ is None else at(exit_),
            entry_price, quantity)
        row = trades[trade_id]
        got = None if row["max_favorable_excursion"] is None else (
            row["max_favorable_excursion"], row["max_adverse_excursion"])
        assert got == expected_excursions, (symbol, direction, entry, exit_)


@pytest.mark.parametrize("lookup_past", [
    validator.ValidatorSettings.lookup_past_bars,  # these worlds' few bars: merged
    0,  # every instant off a bar looked up, as where bars come many times a second
], ids=["merged", "looked-up"])
async def test_sql_matches_the_reference_on_random_worlds(any_db: str, lookup_past: int) -> None:
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(worlds)
    def run(world: World) -> None:
        asyncio.run(check(any_db, world, lookup_past))

    await asyncio.to_thread(run)


async def outcomes(url: str) -> dict[uuid.UUID, tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT prediction_id, actual_return, actual_direction, prediction_accuracy, "
            "validated_at IS NOT NULL AS done FROM model_predictions")
    finally:
        await conn.close()
    return {r["prediction_id"]: tuple(r)[1:] for r in rows}


async def run_once(url: str, stack: Stack) -> None:
    env = cie_environment({"DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
           "CIE_VALIDATOR_SWEEP_BATCH": "500", "CIE_LOG_FORMAT": "json"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "validate", "--once", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


@contextlib.asynccontextmanager
async def validating(url: str, stack: Stack, topics: dict[str, str], log: Path
                     ) -> AsyncIterator[None]:
    """A long-running `cie validate` (its bars/fills topics empty: the sweep does the work)."""
    env = cie_environment({"DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
           "CIE_VALIDATOR_SWEEP_BATCH": "500", "CIE_VALIDATOR_SWEEP_SECONDS": "1",
           "CIE_VALIDATOR_GROUP": f"val-{uuid.uuid4().hex[:8]}", "CIE_METRICS_PORT": "0",
           "CIE_LOG_FORMAT": "json", **topics})
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "validate", env=env, stdout=sink, stderr=sink)
    try:
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=60)
    assert proc.returncode == 0, log_text(log)[-2000:]


async def test_two_validators_at_once_give_what_one_gives(
    plain_db: str, stack: Stack, new_topic: NewTopics, tmp_path: Path
) -> None:
    """One `--once` run on a backlog, and two long-running validators sweeping a copy of it
    at the same time (each in its own group, as two pods with overlapping sweeps) end equal."""
    conn = await asyncpg.connect(plain_db)
    try:  # 20 symbols x 300 minutes of bars; 6,000 predictions with mixed horizons
        await conn.execute("""
            INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume)
            SELECT 'S' || s, $1::timestamptz + make_interval(mins => m),
                   100 + (s * 7 + m * 13) % 50, 151, 99, 100 + (s * 7 + m * 13) % 50, 1
            FROM generate_series(1, 20) AS s, generate_series(0, 299) AS m
            WHERE (s + m) % 37 <> 0""", T0)
        await conn.execute("""
            INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
                predicted_at, prediction_horizon_minutes, predicted_direction, feature_vector)
            SELECT gen_random_uuid(), 'v', 'direction', 'S' || s,
                   $1::timestamptz + make_interval(mins => m),
                   (ARRAY[5, 15, 60])[1 + (s + m) % 3], (ARRAY['LONG', 'SHORT'])[1 + m % 2], '{}'
            FROM generate_series(1, 20) AS s, generate_series(0, 299) AS m""", T0)
    finally:
        await conn.close()
    source = plain_db.rsplit("/", 1)[1]
    # a template must have no sessions, and TimescaleDB's launcher keeps visiting databases
    await admin_execute(stack.server_url, f'ALTER DATABASE "{source}" ALLOW_CONNECTIONS false',
                         "SELECT pg_terminate_backend(pid) FROM "
                         f"pg_stat_activity WHERE datname = '{source}'")
    copy = await clone(stack, source)  # the same backlog, twice
    copy_url = database_url(stack.server_url, copy)
    await admin_execute(stack.server_url, f'ALTER DATABASE "{source}" ALLOW_CONNECTIONS true')
    try:
        await run_once(plain_db, stack)
        one = await outcomes(plain_db)
        assert len(one) == 6000 and sum(1 for o in one.values() if o[-1]) > 5000
        topics = {"CIE_TOPIC_BARS": await new_topic("vbars", 1),
                  "CIE_TOPIC_FILLS": await new_topic("vfills", 1)}
        async with (validating(copy_url, stack, topics, tmp_path / "a.log"),
                    validating(copy_url, stack, topics, tmp_path / "b.log")):
            two = await eventually(partial(outcomes, copy_url), one, timeout=180)
        assert two == one
    finally:
        await admin_execute(stack.server_url, f'DROP DATABASE "{copy}" WITH (FORCE)')
