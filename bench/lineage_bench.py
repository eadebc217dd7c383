r"""What lineage costs in storage: bytes per stored fill of its source row (trade_fill_sources),
against the fill's own row (trade_fills), on one schema path.

    deploy/local/stack.sh up
    .venv/bin/python bench/lineage_bench.py [--fills 200000] [--timescaledb]

The fills go through the consumer's own write path (FillsPipeline, batches of 5,000, each
fill with the Kafka record it came in: six partitions, increasing offsets, a `source` header
on every record and a W3C `traceparent` on most, as producers that trace send them). Sizes are
the tables' with their indexes and TOAST (``pg_total_relation_size``, or
``hypertables_size`` on TimescaleDB), after VACUUM; on TimescaleDB again after compressing
every chunk (the policy compresses fills and sources after 90 days).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from datetime import UTC, datetime

import asyncpg
import msgspec
from aiokafka.structs import ConsumerRecord
from ingest_bench import create_database, drop_database, make_fills  # bench/, beside this
from positions_bench import PARTITIONS, record

from consumers.ingest.pipelines.base import staging_tables
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.sink import write_batch
from consumers.platform.db import create_pool
from consumers.platform.settings import load_settings

BATCH = 5_000
TABLES = ("trade_fills", "trade_fill_sources")


def records(fills: list[bytes], trade_ids: list[str],
            rng: random.Random) -> list[ConsumerRecord[bytes, bytes]]:
    """Each fill's record: its trade's partition, the next offset there, and headers."""
    offsets = [0] * PARTITIONS
    return [record("fills", offsets, trade.encode(), value, rng)
            for value, trade in zip(fills, trade_ids, strict=True)]


async def sizes(conn: asyncpg.Connection, timescaledb: bool) -> dict[str, int]:
    query = ("SELECT hypertable_size($1::regclass)" if timescaledb
             else "SELECT pg_total_relation_size($1::regclass)")
    return {table: int(await conn.fetchval(query, table)) for table in TABLES}


async def measure(url: str, n: int, timescaledb: bool) -> dict[str, object]:
    pipeline = FillsPipeline()
    fills = make_fills(n)
    values = [msgspec.json.encode(f) for f in fills]
    rng = random.Random(7)
    now = datetime.now(UTC)
    ready = [pipeline.with_source(pipeline.accept(v, now), r) for v, r in zip(
        values, records(values, [str(f.trade_id) for f in fills], rng), strict=True)]
    pool = await create_pool(url, staging_tables([pipeline]))
    try:
        for start in range(0, len(ready), BATCH):
            assert await write_batch(pool, pipeline, ready[start:start + BATCH]) == []
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    try:
        for table in TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
        result: dict[str, object] = {"fills": n, "path": "timescaledb" if timescaledb else "plain"}
        raw = await sizes(conn, timescaledb)
        result["bytes_per_fill"] = {t: round(raw[t] / n, 1) for t in TABLES}
        if timescaledb:
            for table in TABLES:
                await conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
            packed = await sizes(conn, timescaledb)
            result["bytes_per_fill_compressed"] = {t: round(packed[t] / n, 1) for t in TABLES}
        return result
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> None:
    settings = load_settings()
    name = f"cie_lineage_{os.getpid()}"
    url = await create_database(settings, name, args.timescaledb)
    try:
        result = await measure(url, args.fills, args.timescaledb)
    finally:
        await drop_database(settings, name)
    per = result["bytes_per_fill"]
    assert isinstance(per, dict)
    print(f"{result['path']}: a fill's source row costs {per['trade_fill_sources']:.0f} bytes "
          f"against {per['trade_fills']:.0f} for the fill itself "
          f"(+{per['trade_fill_sources'] / per['trade_fills']:.0%})")
    packed = result.get("bytes_per_fill_compressed")
    if isinstance(packed, dict):
        share = packed["trade_fill_sources"] / packed["trade_fills"]
        print(f"compressed: {packed['trade_fill_sources']:.1f} against "
              f"{packed['trade_fills']:.1f} (+{share:.0%})")
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=200_000)
    parser.add_argument("--timescaledb", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
