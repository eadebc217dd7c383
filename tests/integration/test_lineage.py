"""Lineage: every stored fill knows the Kafka record that carried it, and `cie trace` follows a
fill or a trade (re-keyed by a late earlier fill, too) back to its records."""

from __future__ import annotations

import json
import uuid

import asyncpg
import msgspec

from tests.support.builders import fill
from tests.support.cie import run_cie
from tests.support.harness import Ingest, counter, eventually, ingest_environment
from tests.support.stack import Stack

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_cie_trace_follows_a_fill_and_a_rekeyed_trade_back_to_their_records(
    stack: Stack, any_db: str
) -> None:
    environment = ingest_environment(stack.kafka, any_db)
    ingest = Ingest(environment)
    await ingest.open()
    trade = uuid.uuid4()
    key = str(trade).encode()  # one trade's fills share a key, so a partition
    bought = fill(trade, "BUY", 5, "100.25", 5)
    earlier = fill(trade, "BUY", 5, "99.5", 1)  # arrives after the trade is stored: re-keys it
    sold = fill(trade, "SELL", 10, "101", 9)
    values = {f.fill_id: msgspec.json.encode(f) for f in (bought, earlier, sold)}
    try:
        await ingest.start()
        await ingest.send_raw("fills", [values[bought.fill_id]], key=key, headers=[
            ("source", b"oms-7"), ("traceparent", TRACEPARENT.encode())])
        fills = counter(any_db, "SELECT count(*) FROM trade_fills")
        assert await eventually(fills, 1) == 1
        # no headers on these: their sources have none either
        await ingest.send_raw("fills", [values[earlier.fill_id], values[sold.fill_id]], key=key)
        assert await eventually(fills, 3) == 3
        await ingest.drained("fills", 3)
        await ingest.stop()

        settings = {"DATABASE_URL": any_db, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka}
        status, out = await run_cie("trace", str(earlier.fill_id), env=settings)
        assert status == 0, out
        traced = json.loads(out)
        assert traced["trade_id"] == str(trade)
        # the trade's row was re-keyed: it opens at the late earlier fill
        assert traced["trade"]["entry_time"].startswith(earlier.filled_at.isoformat()[:19])
        assert [f["fill_id"] for f in traced["fills"]] \
            == [str(earlier.fill_id), str(bought.fill_id), str(sold.fill_id)]
        assert [(f["opening"], f["latest"]) for f in traced["fills"]] \
            == [(True, False), (False, False), (False, True)]
        sources = [f["source"] for f in traced["fills"]]
        assert {s["topic"] for s in sources} == {ingest.topic("fills")}
        assert len({s["partition"] for s in sources}) == 1
        offsets = [s["offset"] for s in sources]
        assert offsets[1] < offsets[0] < offsets[2]  # sent: bought, earlier, sold
        assert (sources[1]["producer"], sources[1]["traceparent"]) == ("oms-7", TRACEPARENT)
        assert (sources[0]["producer"], sources[0]["traceparent"]) == (None, None)
        # read back from Kafka: the very records that were sent
        for traced_fill in traced["fills"]:
            record = traced_fill["record"]
            assert record["value"] == values[uuid.UUID(traced_fill["fill_id"])].decode()
            assert record["key"] == key.decode()
        assert traced["fills"][1]["record"]["headers"] \
            == {"source": "oms-7", "traceparent": TRACEPARENT}

        status, by_trade = await run_cie("trace", str(trade), "--no-kafka", env=settings)
        assert status == 0, by_trade
        trade_trace = json.loads(by_trade)
        assert [f["source"] for f in trade_trace["fills"]] == sources
        assert all(f["record"] is None for f in trade_trace["fills"])

        status, out = await run_cie("trace", str(uuid.uuid4()), env=settings)
        assert status == 1 and "no stored fill or trade" in out
    finally:
        await ingest.close()


async def test_a_fill_and_its_source_are_stored_together_or_not_at_all(
    stack: Stack, any_db: str
) -> None:
    """A redelivered fill writes no second source; a refused fill (a flip) stores none."""
    ingest = Ingest(ingest_environment(stack.kafka, any_db))
    await ingest.open()
    trade = uuid.uuid4()
    opened = fill(trade, "BUY", 5, "100", 0)
    flip = fill(trade, "SELL", 20, "101", 3)
    try:
        await ingest.start()
        for value in (opened, opened, flip):
            await ingest.send_raw("fills", [msgspec.json.encode(value)], key=str(trade).encode())
        await ingest.drained("fills", 3)
        await ingest.stop()
        conn = await asyncpg.connect(any_db)
        try:
            rows = await conn.fetch("SELECT fill_id, kafka_offset FROM trade_fill_sources")
            # the first record of a new topic's partition
            assert [(r["fill_id"], r["kafka_offset"]) for r in rows] == [(opened.fill_id, 0)]
        finally:
            await conn.close()
        assert len(await ingest.all_dead_letters("fills")) == 1
    finally:
        await ingest.close()


async def test_a_source_stored_without_its_fill_gives_way_to_the_record_that_stores_it(
    stack: Stack, any_db: str
) -> None:
    """A fill's month archived and removed leaves its source (kept by age): the fill sent again
    is stored, with the record that carried it this time."""
    ingest = Ingest(ingest_environment(stack.kafka, any_db))
    await ingest.open()
    trade = uuid.uuid4()
    again = fill(trade, "BUY", 5, "100", 0)
    conn = await asyncpg.connect(any_db)
    try:
        await conn.execute(
            "INSERT INTO trade_fill_sources VALUES ($1, $2, 'old-topic', 3, 77, 'old', NULL)",
            again.fill_id, again.filled_at)
        await ingest.start()
        await ingest.send_raw("fills", [msgspec.json.encode(again)], key=str(trade).encode())
        await ingest.drained("fills", 1)
        await ingest.stop()
        row = await conn.fetchrow("SELECT topic, kafka_offset, producer FROM trade_fill_sources")
        assert tuple(row) == (ingest.topic("fills"), 0, None)
        assert await conn.fetchval("SELECT count(*) FROM trade_fills") == 1
        assert await ingest.all_dead_letters("fills") == []
    finally:
        await conn.close()
        await ingest.close()
