r"""What a batch's bookkeeping costs the write: its partitions' positions moved in the same
transaction (bars, fills) and each fill's source row (fills), against the write as it was
before them.

    deploy/local/stack.sh up
    .venv/bin/python bench/positions_bench.py [--batches 200] [--batch-rows 1000] [--timescaledb]
        [--no-sources]

End-to-end rates on this shared machine move by 20-40 % between two runs of the same code (the
server's own COPY reference too), so a few per cent cannot be told apart that way. This writes
the consumer's batches through its own write path (``write_batch``; with bookkeeping as the
checkpoint does: positions read once, the batch checked against them, ``BatchSeal``), alternating
with the fast path as it was before (bars: one COPY in autocommit; fills: their own
transaction, no source rows), batch after batch into the same tables, and compares the median
time of a batch. Bars
and fills as producers send them (varied values at full precision, four fills a trade; each
record with a `source` header and most with a `traceparent`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
from aiokafka.structs import ConsumerRecord
from ingest_bench import create_database, drop_database, make_fills  # bench/, beside this

from consumers.contracts.bars import Bar
from consumers.ingest.checkpoint import _offset_spans
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import Pipeline, staging_tables
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.positions import BatchSeal, Positions
from consumers.ingest.sink import write_batch
from consumers.platform.db import acquire, create_pool
from consumers.platform.settings import load_settings

PARTITIONS = 6
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def varied_bars(n: int, rng: random.Random) -> list[Bar]:
    def d(low: float, high: float, places: int) -> Decimal:
        return Decimal(f"{rng.uniform(low, high):.{places}f}")
    return [Bar(symbol=f"S{i % 500:03d}", timestamp=T0 + timedelta(seconds=i // 500),
                open=d(10, 500, 8), high=d(500, 600, 8), low=d(1, 10, 8), close=d(10, 500, 8),
                volume=rng.randrange(1, 10**9), atr_14=d(0, 20, 8), rsi_14=d(0, 100, 2),
                ema_20=d(10, 500, 8), ema_50=d(10, 500, 8), bb_upper=d(10, 500, 8),
                bb_lower=d(10, 500, 8), macd_line=d(-5, 5, 8), macd_signal=d(-5, 5, 8),
                volatility_20d=d(0, 1, 6), vix=d(10, 40, 4), detected_regime="ranging",
                regime_confidence=d(0, 1, 4), spy_correlation=d(-1, 1, 3),
                sector_correlation=d(-1, 1, 3))
            for i in range(n)]


def record(topic: str, offsets: list[int], key: bytes, value: bytes,
           rng: random.Random) -> ConsumerRecord[bytes, bytes]:
    partition = zlib.crc32(key) % PARTITIONS
    headers = [("source", f"oms-{rng.randrange(4)}".encode())]
    if rng.random() < 0.9:
        headers.append(("traceparent",
                        f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()))
    offsets[partition] += 1
    return ConsumerRecord(topic=topic, partition=partition, offset=offsets[partition] - 1,
                          timestamp=0, timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=len(key), serialized_value_size=len(value),
                          headers=tuple(headers))


def prepared(pipeline: Pipeline, topic: str, values: Sequence[tuple[bytes, bytes]],
             rng: random.Random) -> tuple[list[Any], list[Any], list[Any]]:
    """Each message as the consumer holds it: (events without source, with, their records)."""
    now = datetime.now(UTC) + timedelta(days=3650)  # no event time is "in the future"
    offsets = [0] * PARTITIONS
    bare, sourced, records = [], [], []
    for key, value in values:
        rec = record(topic, offsets, key, value, rng)
        ready = pipeline.accept(value, now)
        bare.append(ready)
        sourced.append(pipeline.with_source(ready, rec))
        records.append(rec)
    return bare, sourced, records


async def write_without_bookkeeping(pool: asyncpg.Pool, pipeline: Pipeline,
                                    events: Sequence[Any]) -> None:
    """The fast path as it was before positions: bars one COPY in autocommit, fills their own
    transaction (every key here is new, so the fast path is all there is)."""
    async with acquire(pool) as conn:
        if isinstance(pipeline, FillsPipeline):
            async with conn.transaction():
                assert await pipeline.write_new(conn, events) == []
        else:
            assert await pipeline.write_new(conn, events) == []


async def run_case(url: str, name: str, pipeline: Pipeline, values: Sequence[tuple[bytes, bytes]],
                   batch_rows: int, rng: random.Random, sources: bool) -> dict[str, float]:
    topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    bare, sourced, records = prepared(pipeline, topic, values, rng)
    if not sources:  # the positions alone
        sourced = bare
    positions = Positions("bench")
    pool = await create_pool(url, staging_tables([pipeline]))
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for index, start in enumerate(range(0, len(values), batch_rows)):
            kept = index % 2 == 1  # alternate, so drift on the machine hits both alike
            stop = start + batch_rows
            batch = records[start:stop]
            spans = _offset_spans(batch)  # the checkpoint has them anyway (its log line)
            began = time.perf_counter()
            if kept:  # as Checkpoint._write_unwritten does
                await positions.load(pool, topic, spans)
                assert not positions.behind(topic, spans)
                await write_batch(pool, pipeline, sourced[start:stop], BatchSeal(
                    positions, topic, batch, {p: high + 1 for p, (_, high) in spans.items()}))
            else:
                await write_without_bookkeeping(pool, pipeline, bare[start:stop])
            times[kept].append(time.perf_counter() - began)
    finally:
        await pool.close()
    without = statistics.median(times[False][1:])  # the first of each: connections, plans
    with_ = statistics.median(times[True][1:])
    return {"batch_ms_without": round(without * 1000, 2), "batch_ms_with": round(with_ * 1000, 2),
            "ratio": round(with_ / without, 3)}


async def main_async(args: argparse.Namespace) -> None:
    settings = load_settings()
    rng = random.Random(11)
    n = args.batches * args.batch_rows
    bars = [(b.symbol.encode(), msgspec.json.encode(b)) for b in varied_bars(n, rng)]
    fills = [(str(f.trade_id).encode(), msgspec.json.encode(f)) for f in make_fills(n)]
    path = "timescaledb" if args.timescaledb else "plain"
    for name, pipeline, values in (("bars", BarsPipeline(), bars),
                                   ("fills", FillsPipeline(), fills)):
        db = f"cie_positions_{os.getpid()}"
        url = await create_database(settings, db, args.timescaledb)
        try:
            result = await run_case(url, name, pipeline, values, args.batch_rows, rng,
                                    not args.no_sources)
        finally:
            await drop_database(settings, db)
        what = "positions" + (" and sources" if name == "fills" and not args.no_sources else "")
        print(f"{path} {name}, batches of {args.batch_rows}: median {result['batch_ms_with']} ms "
              f"a batch with {what}, {result['batch_ms_without']} ms without: "
              f"{result['ratio']:.3f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--no-sources", action="store_true",
                        help="fills: the positions alone, without their source rows")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
