"""Adding a topic takes a contract, a pipeline and one entry in the topic table: a throw-away
fifth topic, defined here, goes end to end through the consumer and its dead-letter topic."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import asyncpg
import msgspec

from consumers.contracts.base import POSITIVE, Bound, Contract, Symbol, UtcTime
from consumers.ingest.pipelines.base import CopyUpsertPipeline, Rejection
from consumers.platform.db import Conn, copy_lines
from consumers.topics import TOPICS, Topic
from tests.support.harness import Ingest, counter, eventually, ingest_environment
from tests.support.stack import Stack


class Tick(Contract, frozen=True, kw_only=True):
    symbol: Symbol
    at: UtcTime
    price: Decimal
    decimals: ClassVar[dict[str, tuple[int, int]]] = {"price": (18, 8)}
    bounds: ClassVar[dict[str, Bound]] = {"price": POSITIVE}


class TicksPipeline(CopyUpsertPipeline):
    name = "ticks"
    event_type = Tick
    time_fields = ("at",)
    stage, target, key = "stage_ticks", "ticks", ("symbol", "at")
    columns = tuple(Tick.__struct_fields__)

    def staging_ddl(self) -> Sequence[str]:
        return ("CREATE TEMP TABLE IF NOT EXISTS stage_ticks ON COMMIT DELETE ROWS AS "
                "SELECT symbol, at, price, 0::integer AS batch_seq FROM ticks WITH NO DATA",)

    def to_row(self, event: Any) -> tuple[Any, ...]:
        return msgspec.structs.astuple(event)

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        staged = [f"{e.line[:-1]}\t{seq}\n" for seq, e in enumerate(events)]
        await copy_lines(conn, self.stage, (*self.columns, "batch_seq"), staged)
        await conn.execute(
            "INSERT INTO ticks SELECT DISTINCT ON (symbol, at) symbol, at, price "
            "FROM stage_ticks ORDER BY symbol, at, batch_seq DESC "
            "ON CONFLICT (symbol, at) DO UPDATE SET price = EXCLUDED.price")
        return []


TICKS = Topic("ticks", "ticks", Tick, lambda tick: tick.symbol.encode(), TicksPipeline)


async def test_a_fifth_topic_end_to_end(stack: Stack, plain_db: str) -> None:
    conn = await asyncpg.connect(plain_db)
    try:
        await conn.execute("CREATE TABLE ticks (symbol TEXT, at TIMESTAMPTZ, "
                           "price NUMERIC(18, 8) CHECK (price > 0), PRIMARY KEY (symbol, at))")
    finally:
        await conn.close()
    ingest = Ingest(ingest_environment(stack.kafka, plain_db, CIE_TOPIC_TICKS="ticks-e2e"),
                    table=[*TOPICS, TICKS])
    await ingest.open()
    try:
        await ingest.start()
        at = datetime.now(UTC) - timedelta(hours=1)

        def tick(minute: int, price: object) -> bytes:
            return json.dumps({"symbol": "T", "at": (at + timedelta(minutes=minute)).isoformat(),
                               "price": price}).encode()

        # two ticks, a correction of the first, one the contract refuses
        await ingest.send_raw("ticks", [tick(0, "10.5"), tick(1, "11"), tick(0, "10.25"),
                                        tick(2, "-1")], key=b"T")
        prices = counter(plain_db, "SELECT string_agg(price::text, ',' ORDER BY at) FROM ticks")
        assert await eventually(prices, "10.25000000,11.00000000") == "10.25000000,11.00000000"
        [letter] = await ingest.all_dead_letters("ticks")
        assert dict(letter.headers)["dlq.error.class"] == b"ValidationError"
        assert b"price" in dict(letter.headers)["dlq.error.reason"]
        assert ingest.topic("ticks") == "ticks-e2e"
    finally:
        await ingest.close()
