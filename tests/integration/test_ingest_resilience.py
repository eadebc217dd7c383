"""Crashes and outages, with `cie consume` as a real process: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import asyncpg
from prometheus_client import REGISTRY

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from tests.support.builders import fill as build_fill
from tests.support.clock import T0
from tests.support.harness import (
    Ingest,
    consume_subprocess,
    counter,
    eventually,
    ingest_environment,
)
from tests.support.ports import log_text
from tests.support.private_postgres import PrivatePostgres
from tests.support.stack import Stack


def bars(symbols: int, minutes: range) -> list[Bar]:
    return [
        Bar(symbol=f"S{s:03d}", timestamp=T0 + timedelta(minutes=m), open=Decimal("10"),
            high=Decimal("11"), low=Decimal("9"), close=Decimal(9) + Decimal(m) / 200,
            volume=m)
        for m in minutes for s in range(symbols)
    ]


def round_trip(trade: uuid.UUID, minute: int) -> list[Fill]:
    def fill(side: Literal["BUY", "SELL"], quantity: int, price: str, offset: int) -> Fill:
        return build_fill(trade, side, quantity, price, minute + offset, commission="0.1")
    return [fill("BUY", 10, "100", 0), fill("BUY", 5, "101", 1),
            fill("SELL", 7, "102.5", 5), fill("SELL", 8, "99.75", 6)]


# by hand: bought 10 x 100 + 5 x 101 = 1505, sold 7 x 102.5 + 8 x 99.75 = 717.5 + 798 = 1515.5;
# gross 10.5, commission 4 x 0.1 = 0.4, net 10.1 (a fill counted twice would change all three)
ROUND_TRIP = (15, Decimal("10.1"), Decimal("0.4"))


async def assert_exactly_once(url: str, expected_bars: int, fills: list[Fill]) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM market_conditions") == expected_bars
        assert await conn.fetchval("SELECT count(*) FROM trade_fills") == len(fills)
        by_trade: dict[uuid.UUID, list[Fill]] = {}
        for f in fills:
            by_trade.setdefault(f.trade_id, []).append(f)
        rows = {r["trade_id"]: r for r in await conn.fetch("SELECT * FROM trade_outcomes")}
        assert len(rows) == len(by_trade)
        for trade_id in by_trade:
            row = rows[trade_id]
            assert (row["quantity"], row["net_pnl"], row["commission"]) == ROUND_TRIP
    finally:
        await conn.close()


async def logged(log: Path, event: str) -> bool:
    return event in log_text(log)


NOTIFY_POSITION_MOVES = """
CREATE FUNCTION test_notify_position_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('position_moved', NEW.topic);
    RETURN NULL;
END $$;
CREATE TRIGGER test_notify_position_moved AFTER INSERT OR UPDATE ON ingest_positions
    FOR EACH ROW EXECUTE FUNCTION test_notify_position_moved();
"""


def skipped_as_written(log: Path, topic: str) -> int:
    """Messages the process read again and skipped, its rows being in the database already."""
    lines = (json.loads(line) for line in log_text(log).splitlines() if line.startswith("{"))
    return sum(line.get("skipped_as_written", 0) for line in lines
               if line.get("event") == "batch.flushed" and line.get("topic") == topic)


async def test_sigkill_mid_stream_then_restart_lands_everything_once_and_rewrites_nothing(
    stack: Stack, any_db: str, tmp_path: Path
) -> None:
    # batches of 200 that do not grow: many commits, so a kill can land between two
    environment = ingest_environment(stack.kafka, any_db, CIE_BATCH_MAX_ROWS="200",
                                     CIE_BATCH_BACKLOG_MAX_ROWS="200",
                                     CIE_BATCH_MAX_LATENCY_MS="50")
    ingest = Ingest(environment)
    await ingest.open()
    try:
        fills = [f for i in range(60) for f in round_trip(uuid.uuid4(), i)]
        first = bars(20, range(0, 150))
        await ingest.send(first + fills[:120])
        landed = counter(any_db, "SELECT count(*) FROM market_conditions")
        # Killed mid-stream, more than once if need be, until a kill lands between a batch's
        # row commit and its offset commit: rows in the database whose offsets the group has
        # not committed, which the restarted consumer reads again and must skip, not write.
        # The kill follows a bars batch's commit at once: the position's move is NOTIFYed to
        # this test as the transaction commits, a broker round trip before Kafka's commit.
        watcher = await asyncpg.connect(any_db)
        moved: asyncio.Queue[str] = asyncio.Queue()
        try:
            await watcher.execute(NOTIFY_POSITION_MOVES)
            await watcher.add_listener("position_moved", lambda *args: moved.put_nowait(args[3]))
            for attempt in range(5):
                async with consume_subprocess(environment,
                                              tmp_path / f"consume-{attempt}.log") as proc:
                    while await asyncio.wait_for(moved.get(), 60) != ingest.topic("bars"):
                        pass
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                partial, committed = await landed(), await ingest.committed("bars")
                assert committed <= partial < len(first)  # offsets never ahead of the rows
                if committed < partial:
                    break
        finally:
            await watcher.close()
        assert committed < partial, "no kill landed between a row commit and its offset commit"
        second = bars(20, range(150, 200))
        await ingest.send(second + fills[120:])
        last = tmp_path / "consume-last.log"
        async with consume_subprocess(environment, last):
            total = len(first) + len(second)
            await ingest.drained("bars", total, timeout=90)
            await ingest.drained("fills", len(fills), timeout=60)
        await assert_exactly_once(any_db, total, fills)
        # the bars between Kafka's commit and the database's position were read, not written
        assert skipped_as_written(last, ingest.topic("bars")) == partial - committed
    finally:
        await ingest.close()


async def test_postgres_outage_mid_stream_loses_nothing_and_the_consumer_survives(
    stack: Stack, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    # its own PostgreSQL: stopping the shared one would break every other test and a running
    # `stack.sh run`
    plain_db = await private_postgres.migrated()
    environment = ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="200",
                                     CIE_BATCH_MAX_LATENCY_MS="50")
    ingest = Ingest(environment)
    await ingest.open()
    log = tmp_path / "consume.log"
    try:
        landed = counter(plain_db, "SELECT count(*) FROM market_conditions")
        fills = [f for i in range(20) for f in round_trip(uuid.uuid4(), i)]
        async with consume_subprocess(environment, log) as proc:
            await ingest.send(bars(10, range(0, 50)) + fills[:40])
            assert await eventually(landed, 500) == 500
            await private_postgres.stop()
            try:
                await ingest.send(bars(10, range(50, 100)) + fills[40:])
                retried = await eventually(lambda: logged(log, "database.retry"), True)
                assert retried and proc.returncode is None  # meets the outage and retries
            finally:
                await private_postgres.start()
            await ingest.drained("bars", 1000, timeout=90)
            await ingest.drained("fills", len(fills), timeout=60)
            assert proc.returncode is None
        await assert_exactly_once(plain_db, 1000, fills)
    finally:
        await ingest.close()


async def test_stop_writes_what_is_buffered_and_commits_every_offset_before_returning(
    stack: Stack, plain_db: str,
) -> None:
    # Ten batches flush on size while the consumer runs (each offset commit overlapping the
    # next write); the last 50 bars wait for an age they never reach: only the drain writes them.
    # (Batches do not grow here: a due batch would take the last 50 with it.)
    harness = Ingest(ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="100",
                                        CIE_BATCH_BACKLOG_MAX_ROWS="100",
                                        CIE_BATCH_MAX_LATENCY_MS="600000"))
    await harness.open()
    try:
        await harness.start()
        await harness.send(bars(21, range(50)))
        consumed = REGISTRY.get_sample_value(
            "cie_messages_consumed_total", {"topic": harness.topic("bars")})
        deadline = asyncio.get_running_loop().time() + 30
        while consumed != 1050 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            consumed = REGISTRY.get_sample_value(
                "cie_messages_consumed_total", {"topic": harness.topic("bars")})
        assert consumed == 1050
        rows = counter(plain_db, "SELECT count(*) FROM market_conditions")
        assert await eventually(rows, 1000) == 1000  # the ten full batches, not the rest

        await harness.stop()
        assert await rows() == 1050
        assert await harness.committed("bars") == 1050  # at once: no commit left in flight
    finally:
        await harness.close()


async def test_a_consumer_started_while_the_database_is_down_waits_for_it(
    stack: Stack, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """The start-up schema check (a schema older than the code is refused) meets a database
    that does not answer yet: it waits, as the writers would, and the consumer then runs."""
    plain_db = await private_postgres.migrated()
    environment = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(environment)
    await ingest.open()
    log = tmp_path / "consume.log"
    try:
        await private_postgres.stop()
        restarted = False
        try:
            async with consume_subprocess(environment, log) as proc:
                waited = await eventually(lambda: logged(log, "schema.check_waiting"), True)
                assert waited and proc.returncode is None
                await private_postgres.start()
                restarted = True
                await ingest.send(bars(3, range(10)))
                await ingest.drained("bars", 30, timeout=90)
                assert proc.returncode is None
        finally:
            if not restarted:
                await private_postgres.start()
        landed = counter(plain_db, "SELECT count(*) FROM market_conditions")
        assert await landed() == 30
    finally:
        await ingest.close()
