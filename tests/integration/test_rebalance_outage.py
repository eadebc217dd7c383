"""A rebalance while the database is down: revocation is bounded, nothing is lost or doubled.

Before the bound, each member's revocation listener waited for a flush that waited for the
database, and the rebalance waited for the listeners: a member joining during an outage froze
the whole group until the database came back (or for good). The test runs its own PostgreSQL
cluster, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import REGISTRY

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from tests.support.harness import Ingest, counter, eventually, ingest_environment, row_of
from tests.support.private_postgres import PrivatePostgres
from tests.support.stack import Stack

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)


def bars(minutes: range) -> list[Bar]:
    return [Bar(symbol=f"R{s}", timestamp=T0 + timedelta(minutes=m), open=Decimal("10"),
                high=Decimal("11"), low=Decimal("9"), close=Decimal("10.5"), volume=1)
            for m in minutes for s in range(10)]


def round_trip(n: int) -> list[Fill]:
    """BUY 10 @ 100, SELL 10 @ 101.5, 0.25 commission each: gross 15, net 14.5."""
    trade = uuid.uuid4()
    at = T0 + timedelta(minutes=n)
    return [Fill(fill_id=uuid.uuid4(), trade_id=trade, strategy_id="s", model_version="v",
                 symbol="R0", side=side, quantity=10, price=Decimal(price),  # type: ignore[arg-type]
                 commission=Decimal("0.25"), filled_at=at + timedelta(seconds=offset))
            for side, price, offset in (("BUY", "100", 0), ("SELL", "101.5", 30))]


def uncommitted_revocations() -> float:
    return REGISTRY.get_sample_value("cie_revocations_uncommitted_total") or 0.0


async def test_a_member_joins_during_an_outage(
    stack: Stack, private_postgres: PrivatePostgres
) -> None:
    url = await private_postgres.migrated()
    environment = ingest_environment(
        stack.kafka, url, CIE_BATCH_MAX_ROWS="200", CIE_BATCH_MAX_LATENCY_MS="50",
        CIE_DRAIN_DEADLINE_SECONDS="3", CIE_RETRY_BACKOFF_MAX_MS="1000")
    members = [Ingest(environment) for _ in range(3)]
    first, second, third = members
    await first.open()
    try:
        await first.start()
        await second.start()
        fills = [f for n in range(30) for f in round_trip(n)]
        await first.send(bars(range(0, 60)) + fills[:30])
        landed = counter(url, "SELECT count(*) FROM market_conditions")
        assert await eventually(landed, 600) == 600

        await private_postgres.stop()
        given_up = uncommitted_revocations()
        try:
            await first.send(bars(range(60, 120)) + fills[30:])
            await asyncio.sleep(1)  # both members meet the outage and retry
            await third.start()  # a rebalance the old members cannot flush for
            deadline = time.monotonic() + 30
            while uncommitted_revocations() == given_up and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert uncommitted_revocations() > given_up  # a listener gave up, uncommitted
            await asyncio.sleep(10)  # the outage goes on, the group is not frozen by it
            assert all(member.running for member in members)
        finally:
            await private_postgres.start()

        assert await eventually(landed, 1200, timeout=90) == 1200
        trades = row_of(url, "SELECT count(*), sum(gross_pnl), sum(net_pnl), sum(quantity) "
                              "FROM trade_outcomes WHERE outcome_type = 'WIN'")
        expected = (30, Decimal(15) * 30, Decimal("14.5") * 30, 300)
        assert await eventually(trades, expected, timeout=60) == expected
        assert await eventually(lambda: first.committed("bars"), 1200, timeout=60) == 1200
        assert await eventually(lambda: first.committed("fills"), 60, timeout=60) == 60
        fill_rows = row_of(url, "SELECT count(*), count(DISTINCT fill_id) FROM trade_fills")
        assert await fill_rows() == (60, 60)
        assert all(member.running for member in members)
        for member in members:  # every member leaves within its deadline: none is stuck
            await asyncio.wait_for(member.stop(), timeout=30)
    finally:
        for member in (third, second):
            await member.close(delete_topics=False)
        await first.close()


async def test_writes_while_the_server_shuts_down_are_retried_not_fatal(
    private_postgres: PrivatePostgres,
) -> None:
    """While the server shuts down, a write meets every way a connection can go: refused,
    57P03, closed under it, or (on a pooled connection the server closed while it was idle)
    asyncpg's "another operation is in progress". Each is the infrastructure's fault: a
    TransientError (a retry on a fresh connection), never a fatal stop of the consumer."""
    from consumers.errors import TransientError
    from consumers.ingest.pipelines.bars import BarsPipeline
    from consumers.ingest.pipelines.base import staging_tables
    from consumers.ingest.sink import write_batch
    from consumers.platform.db import create_pool

    url = await private_postgres.migrated()
    pipeline = BarsPipeline()
    pool = await create_pool(url, staging_tables([pipeline]))
    seen: set[str] = set()
    try:
        events = [pipeline.ready(bar) for bar in bars(range(0, 3))]
        for _ in range(3):
            assert await write_batch(pool, pipeline, events) == []  # connections in the pool
            stopping = asyncio.create_task(private_postgres.stop())
            deadline = time.monotonic() + 10
            while not stopping.done() and time.monotonic() < deadline:
                try:
                    await write_batch(pool, pipeline, events)
                except TransientError as exc:
                    seen.add(str(exc)[:40])
                await asyncio.sleep(0.01)
            await stopping
            await private_postgres.start()
        assert await write_batch(pool, pipeline, events) == []
        assert seen  # the shutdowns were met
    finally:
        await pool.close()
