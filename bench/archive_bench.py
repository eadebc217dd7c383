"""Cold-storage benchmark: `cie archive` of one large month, its peak memory, and retention.

    deploy/local/stack.sh up; eval "$(deploy/local/stack.sh env)"
    .venv/bin/python bench/archive_bench.py [--trades 2000000] [--timescaledb]

Builds (server-side) one UTC month six years back holding ``--trades`` trades with varied
values at each column's full precision; then, in a bucket of its own on the stack's S3 server:
- baseline: the server's own COPY of the month's rows to the client (the read no archive can
  avoid);
- archive: `cie archive` in a process of its own (export, upload, read-back verification),
  its wall time and peak RSS (the CronJob's limit is 1 GiB; the target 300 MiB);
- one trade changed in place, `cie archive` again (its slice is written again, whole);
- `cie maintain` (plain PostgreSQL) or the drop job (TimescaleDB) removes the month.
Reports times, the ratio archive / baseline (the machine is shared: compare ratios), peak RSS,
and checks that every row went and S3's parts hold them. Drops its database and bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import boto3
from botocore.config import Config

from consumers.platform import migrations
from consumers.platform.settings import load_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def month_start() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year - 6, 3, 1, tzinfo=UTC)


async def admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def build(url: str, trades: int, timescaledb: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn, use_timescaledb=timescaledb)
        # a month's trades at varied times and full precision (DECIMAL(18, 8) prices,
        # (18, 4) money), as producers send them
        await conn.execute("""
            INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction,
                entry_time, exit_time, entry_price, exit_price, quantity, gross_pnl, net_pnl,
                commission, max_favorable_excursion, max_adverse_excursion, outcome_type)
            SELECT gen_random_uuid(), 'strat-' || (i % 7), 'v' || (i % 3), 'S' || (i % 50),
                   CASE WHEN i % 2 = 0 THEN 'LONG' ELSE 'SHORT' END,
                   t, t + make_interval(secs => 60 + i % 3600),
                   p, p * (1 + (random() - 0.5) / 50), 1 + i % 500, g, g - c, c,
                   round((random() * 10)::numeric, 4), round((-random() * 10)::numeric, 4),
                   CASE WHEN g - c > 0 THEN 'WIN' ELSE 'LOSS' END
            FROM generate_series(1, $2::int) AS i,
                 LATERAL (SELECT $1::timestamptz
                                 + make_interval(secs => (i::float8 * 2592000 / $2)) AS t,
                                 round((50 + random() * 400)::numeric, 8) AS p,
                                 round(((random() - 0.45) * 2000)::numeric, 4) AS g,
                                 round((random() * 5)::numeric, 4) AS c) AS v""",
            month_start(), trades)
        await conn.execute("VACUUM ANALYZE trade_outcomes")
    finally:
        await conn.close()


async def baseline(url: str) -> float:
    """The month's rows, COPY'd by the server to this client and thrown away."""
    conn = await asyncpg.connect(url)
    try:
        sink_bytes = 0

        async def sink(chunk: bytes) -> None:
            nonlocal sink_bytes
            sink_bytes += len(chunk)

        started = time.perf_counter()
        await conn.copy_from_query("SELECT * FROM trade_outcomes", output=sink)
        return time.perf_counter() - started
    finally:
        await conn.close()


def run_cie(env: dict[str, str], *args: str) -> tuple[float, float]:
    """`cie ARGS` in a process of its own: seconds, and its peak RSS in MiB."""
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "consumers", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cie {' '.join(args)} failed:\n{done.stdout[-3000:]}"
                         f"{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child yet
    return seconds, max(peak, before) / 1024


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    server = settings.database_url
    base = server.rsplit("/", 1)[0]
    name = f"cie_abench_{os.getpid()}"
    url = f"{base}/{name}"
    bucket = f"cie-abench-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}"')
    s3.create_bucket(Bucket=bucket)
    path = "TimescaleDB" if args.timescaledb else "plain PostgreSQL"
    try:
        started = time.perf_counter()
        await build(url, args.trades, args.timescaledb)
        print(f"{path}: built {args.trades:,} trades in one month in "
              f"{time.perf_counter() - started:.1f} s")
        env = {**os.environ, "DATABASE_URL": url, "CIE_ARCHIVE_URL": f"s3://{bucket}/archive",
               "CIE_LOG_FORMAT": "json"}
        copy_s = await baseline(url)
        archive_s, archive_rss = run_cie(env, "archive")
        print(f"baseline (server COPY of the month to the client): {copy_s:.1f} s")
        print(f"cie archive: {archive_s:.1f} s = {archive_s / copy_s:.1f}x the baseline, "
              f"peak RSS {archive_rss:.0f} MiB")

        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE trade_outcomes SET max_favorable_excursion = 1.2345 "
                               "WHERE trade_id = (SELECT trade_id FROM trade_outcomes LIMIT 1)")
        finally:
            await conn.close()
        again_s, again_rss = run_cie(env, "archive")
        print(f"cie archive after one trade changed: {again_s:.1f} s (its slice written "
              f"again), peak RSS so far {again_rss:.0f} MiB")

        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            if args.timescaledb:
                job = await conn.fetchval("SELECT job_id FROM timescaledb_information.jobs "
                                          "WHERE proc_name = 'cie_drop_archived_chunks'")
                await conn.execute("CALL run_job($1)", job)
            else:
                await conn.close()
                run_cie(env, "maintain")
                conn = await asyncpg.connect(url)
            removal_s = time.perf_counter() - started
            left = await conn.fetchval("SELECT count(*) FROM trade_outcomes")
            archived = await conn.fetchval("SELECT sum(row_count) FROM archive_parts_current "
                                           "WHERE table_name = 'trade_outcomes'")
            parts = await conn.fetchval("SELECT count(*) FROM archive_parts")
        finally:
            await conn.close()
        print(f"retention: {removal_s:.1f} s; rows left {left}; rows in current parts "
              f"{int(archived or 0):,} ({parts} parts written in all)")
        if left != 0 or archived != args.trades:
            raise SystemExit("retention did not remove exactly what S3 holds")
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--timescaledb", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
