"""The pipelines' writers on the real database: the straight COPY of new rows and its fallback.

A batch of new, distinct keys is copied straight into its table; a batch that meets a stored
key (or repeats one) must end exactly as the staged upsert would leave it: corrections win,
redeliveries change nothing, nothing is duplicated, nothing copied before the conflict stays.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from itertools import product
from typing import Any

import asyncpg
import msgspec
import pytest

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.contracts.predictions import Prediction
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import Pipeline, Rejection, staging_tables
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from consumers.ingest.sink import write_batch
from consumers.platform.db import copy_rows, create_pool
from tests.support.builders import fill as build_fill
from tests.support.clock import T0

fill = partial(build_fill, strategy="s1")


@pytest.fixture
async def pool(any_db: str) -> AsyncIterator[asyncpg.Pool]:
    pipelines: list[Pipeline] = [BarsPipeline(), PredictionsPipeline(), FillsPipeline()]
    pool = await create_pool(any_db, staging_tables(pipelines))
    yield pool
    await pool.close()


def bar(symbol: str, minute: int, close: str) -> Bar:
    return Bar(symbol=symbol, timestamp=T0 + timedelta(minutes=minute), open=Decimal("100"),
               high=Decimal("1000"), low=Decimal("1"), close=Decimal(close), volume=minute)


async def write(pool: asyncpg.Pool, pipeline: Pipeline, events: Sequence[Any]) -> list[Rejection]:
    """As the checkpoint does: each event made ready as it arrives, then the batch written."""
    return await write_batch(pool, pipeline, [pipeline.ready(event) for event in events])


async def rows(pool: asyncpg.Pool, query: str) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn:
        return [tuple(r) for r in await conn.fetch(query)]


async def test_copy_text_reads_back_every_kind_of_time_exactly(pool: asyncpg.Pool) -> None:
    """copy_line renders datetimes itself (not str()): PostgreSQL must read them back as the
    same instants (aware: any offset, seconds included; naive: as written), and dates as the
    same days."""
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    values = [(datetime(2026, 3, 29, 1, 59, 59, micro, tzinfo=zone),
               datetime(2026, 3, 29, 1, 59, 59, micro), date(2026, 2, 28) + timedelta(days=n))
              for n, (micro, zone) in enumerate(product((0, 1, 999_999), zones))]
    odd = timezone(timedelta(minutes=9, seconds=21))  # Paris' local mean time until 1891
    values += [(datetime(1890, 1, 1, 12, tzinfo=odd), datetime(1890, 1, 1, 12), date(1890, 1, 1)),
               (None, None, None)]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE times (aware timestamptz, naive timestamp, "
                           "day date, n int)")
        await copy_rows(conn, "times", ("aware", "naive", "day", "n"),
                        [(*row, n) for n, row in enumerate(values)])
        stored = [tuple(r) for r in await conn.fetch(
            "SELECT aware, naive, day FROM times ORDER BY n")]
    assert stored == values


async def test_new_bars_land_and_a_stored_key_late_in_a_batch_is_corrected(
    pool: asyncpg.Pool,
) -> None:
    assert await write(pool, BarsPipeline(), [bar("AAPL", m, "100.1") for m in range(5)]) == []
    # new bars first, the stored one last: the rows copied before the conflict must not stay
    batch = [bar("MSFT", m, "300.5") for m in range(3)] + [bar("AAPL", 4, "101.25")]
    assert await write(pool, BarsPipeline(), batch) == []
    stored = await rows(pool, "SELECT symbol, extract(minute FROM timestamp)::int - 30, close "
                              "FROM market_conditions ORDER BY 1, 2")
    assert stored == [
        *[("AAPL", m, Decimal("100.1")) for m in range(4)], ("AAPL", 4, Decimal("101.25")),
        *[("MSFT", m, Decimal("300.5")) for m in range(3)]]


async def test_a_key_twice_in_one_batch_keeps_its_last_version(pool: asyncpg.Pool) -> None:
    batch = [bar("AAPL", 0, "1.5"), bar("AAPL", 1, "2.5"), bar("AAPL", 0, "3.5")]
    assert await write(pool, BarsPipeline(), batch) == []
    stored = await rows(pool, "SELECT close FROM market_conditions ORDER BY timestamp")
    assert stored == [(Decimal("3.5"),), (Decimal("2.5"),)]


async def test_a_bad_row_in_a_batch_of_new_bars_is_refused_alone(pool: asyncpg.Pool) -> None:
    # high < low passes the contract's types but breaks the table's CHECK
    bad = Bar(symbol="BAD", timestamp=T0, open=Decimal(1), high=Decimal(1), low=Decimal(2),
              close=Decimal(1), volume=1)
    batch = [bar("AAPL", m, "10") for m in range(6)]
    batch.insert(3, bad)
    rejected = await write(pool, BarsPipeline(), batch)
    assert [r.index for r in rejected] == [3]
    assert rejected[0].error_class == "CheckViolationError"
    assert await rows(pool, "SELECT count(*) FROM market_conditions") == [(6,)]


def prediction(prediction_id: uuid.UUID, confidence: str) -> Prediction:
    return Prediction(prediction_id=prediction_id, model_version="v1", model_type="xgb",
                      symbol="AAPL", predicted_at=T0, prediction_horizon_minutes=15,
                      predicted_direction="LONG", confidence_score=Decimal(confidence),
                      feature_vector={"x": Decimal("1.5")})


async def test_redelivered_predictions_among_new_ones_keep_their_first_version(
    pool: asyncpg.Pool,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert await write(pool, PredictionsPipeline(), [prediction(first, "0.6")]) == []
    batch = [prediction(second, "0.7"), prediction(first, "0.9")]
    assert await write(pool, PredictionsPipeline(), batch) == []
    stored = await rows(pool, "SELECT prediction_id, confidence_score FROM model_predictions")
    assert sorted(stored) == sorted([(first, Decimal("0.6")), (second, Decimal("0.7"))])


async def outcomes(pool: asyncpg.Pool) -> dict[uuid.UUID, tuple[Any, ...]]:
    found = await rows(pool, "SELECT trade_id, quantity, gross_pnl, outcome_type "
                             "FROM trade_outcomes")
    return {row[0]: row[1:] for row in found}


async def test_new_and_stored_trades_in_one_batch_are_each_derived_from_their_ledger(
    pool: asyncpg.Pool,
) -> None:
    stored, fresh = uuid.uuid4(), uuid.uuid4()
    opening = fill(stored, "BUY", 10, "100", seconds=0)
    assert await write(pool, FillsPipeline(), [opening]) == []
    batch: Sequence[Fill] = [
        fill(fresh, "SELL", 5, "50", seconds=1),
        fill(stored, "SELL", 10, "101.5", seconds=2),  # closes the stored trade: +15
        opening,  # redelivered
        fill(fresh, "BUY", 5, "49", seconds=3),  # closes the new SHORT trade: +5
    ]
    assert await write(pool, FillsPipeline(), batch) == []
    assert await outcomes(pool) == {
        stored: (10, Decimal("15.0000"), "WIN"), fresh: (5, Decimal("5.0000"), "WIN")}
    assert await rows(pool, "SELECT count(*) FROM trade_fills") == [(4,)]

    # the whole batch again (a redelivery after a crash): nothing changes
    assert await write(pool, FillsPipeline(), [opening, *batch]) == []
    assert await rows(pool, "SELECT count(*) FROM trade_fills") == [(4,)]
    assert len(await outcomes(pool)) == 2


async def test_a_fill_id_stored_under_another_trade_is_refused_and_left_out_of_the_trade(
    pool: asyncpg.Pool,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    taken = fill(first, "BUY", 10, "100", seconds=0)
    assert await write(pool, FillsPipeline(), [taken]) == []
    # the same execution (fill_id and filled_at) again, but under another trade, among good
    # fills: the copy meets the stored key, so only that fill is refused
    reused = Fill(**{**msgspec.structs.asdict(taken), "trade_id": second, "quantity": 7})
    batch = [fill(second, "BUY", 4, "100", seconds=1), reused, fill(second, "SELL", 4, "102", seconds=2),
             fill(first, "SELL", 10, "101", seconds=3)]
    rejected = await write(pool, FillsPipeline(), batch)
    assert [(r.index, r.error_class) for r in rejected] == [(1, "DuplicateFillId")]
    assert str(first) in rejected[0].reason
    assert await outcomes(pool) == {
        first: (10, Decimal("10.0000"), "WIN"), second: (4, Decimal("8.0000"), "WIN")}
    assert await rows(pool, f"SELECT count(*) FROM trade_fills WHERE trade_id = '{second}'") \
        == [(2,)]


async def test_a_fill_id_given_to_two_trades_in_one_batch_stays_with_the_first(
    pool: asyncpg.Pool,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    shared = fill(first, "BUY", 10, "100", seconds=0)
    # same fill_id, another time and trade: the key differs, so only the batch can tell
    again = Fill(**{**msgspec.structs.asdict(shared), "trade_id": second,
                    "filled_at": T0 + timedelta(seconds=5)})
    rejected = await write(pool, FillsPipeline(), [shared, fill(second, "BUY", 3, "90", seconds=1),
                                                   again])
    assert [(r.index, r.error_class) for r in rejected] == [(2, "DuplicateFillId")]
    assert await rows(pool, "SELECT trade_id, quantity FROM trade_fills ORDER BY filled_at") \
        == [(first, 10), (second, 3)]


async def test_a_trade_row_stored_without_fills_is_re_derived_when_its_fills_arrive(
    pool: asyncpg.Pool,
) -> None:
    # e.g. history imported from before trade_fills existed: a row but no ledger
    imported = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction,"
            " entry_time, entry_price, quantity, outcome_type)"
            " VALUES ($1, 's1', 'v1', 'AAPL', 'LONG', $2, 1, 1, 'OPEN')", imported, T0)
    batch = [fill(imported, "BUY", 10, "100", seconds=0), fill(imported, "SELL", 10, "99", seconds=1),
             fill(uuid.uuid4(), "BUY", 1, "5", seconds=2)]
    assert await write(pool, FillsPipeline(), batch) == []
    assert (await outcomes(pool))[imported] == (10, Decimal("-10.0000"), "LOSS")
    assert await rows(pool, "SELECT count(*) FROM trade_outcomes") == [(2,)]


async def trade_marks(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    """The rollup's pending trade marks, and then none."""
    async with pool.acquire() as conn:
        found = await conn.fetch("DELETE FROM rollup_pending WHERE kind = 'trade' "
                                 "RETURNING strategy_id, model_version, day")
    return sorted(tuple(r) for r in found)


async def test_fills_mark_each_changed_day_once_with_the_days_a_trade_leaves(
    pool: asyncpg.Pool,
) -> None:
    """The fills writer tells the rollup what changed: one mark per (strategy, model version,
    exit day) per flush instead of the triggers' one per trade, and the day a re-derived
    trade leaves as well as the day it lands on."""
    day_after = 24 * 3600
    closed, also_closed, still_open = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await write(pool, FillsPipeline(), [
        fill(closed, "BUY", 10, "100", seconds=0), fill(closed, "SELL", 10, "101", seconds=day_after),
        fill(also_closed, "BUY", 1, "100", seconds=0), fill(also_closed, "SELL", 1, "99", seconds=day_after + 1),
        fill(still_open, "BUY", 1, "100", seconds=0)]) == []
    exit_day = (T0 + timedelta(seconds=day_after)).date()
    assert await trade_marks(pool) == [("s1", "v1", exit_day)]

    # a late buy before the sell: the closed trade is open again and leaves its exit day
    assert await write(pool, FillsPipeline(), [fill(closed, "BUY", 5, "100", seconds=60)]) == []
    assert (await outcomes(pool))[closed] == (15, None, "OPEN")
    assert await trade_marks(pool) == [("s1", "v1", exit_day)]

    # and the open one closes on the next day (a new day) while a stored trade stays put
    assert await write(pool, FillsPipeline(), [
        fill(still_open, "SELL", 1, "103", seconds=2 * day_after)]) == []
    assert await trade_marks(pool) == [("s1", "v1", exit_day + timedelta(days=1))]
