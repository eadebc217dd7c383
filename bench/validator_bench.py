"""Validator backlog benchmark, against a bare UPDATE of the same rows measured in the same run.

    deploy/local/stack.sh up
    .venv/bin/python bench/validator_bench.py [--predictions 1000000] [--symbols 50] [--timescaledb]
        [--bars-per-minute 1] [--off-bar] [--lookup-past-bars N]

Builds (server-side) `--bars-per-minute` bars a minute per symbol (one by default) and one
prediction a minute per symbol with horizons of 5, 15 and 60 minutes, all past their horizon,
on a bar's time (`--off-bar`: half a bar later, so that every instant's bar is found by the
merge or a lookup, not by the equi-join); clones the database; then
- baseline: one bare UPDATE writing constant outcomes into every prediction of the clone
  (the write cost no validator can avoid);
- validator: `cie validate --once` draining the whole backlog in the original.
Reports both times and their ratio (the machine is shared; the ratio is the figure to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from consumers.platform import migrations
from consumers.platform.settings import load_settings


def start_of(minutes: int) -> datetime:
    """Recent data, ending an hour ago: on TimescaleDB older chunks would be compressed
    (bars after 7 days), which is not where the validator normally works."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes + 120)


async def admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def build(url: str, symbols: int, minutes: int, timescaledb: bool, bars_per_minute: int,
                off_bar: bool) -> None:
    t0 = start_of(minutes)
    bar_seconds = 60 / bars_per_minute
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn, use_timescaledb=timescaledb)
        await conn.execute("""
            INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume)
            SELECT 'S' || lpad(s::text, 3, '0'), $1::timestamptz + make_interval(secs => k * $4),
                   c, c + 0.5, c - 0.5, c, 1000
            FROM generate_series(1, $2::int) AS s, generate_series(0, $3::int - 1) AS k,
                 LATERAL (SELECT round((100 + 10 * sin(k * $4 / 3000.0 + s))::numeric, 8) AS c)
                 AS price""",
            t0, symbols, (minutes + 60) * bars_per_minute, bar_seconds)
        await conn.execute("""
            INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
                predicted_at, prediction_horizon_minutes, predicted_direction, feature_vector)
            SELECT gen_random_uuid(), 'v1', 'direction', 'S' || lpad(s::text, 3, '0'),
                   $1::timestamptz + make_interval(mins => m, secs => $4),
                   (ARRAY[5, 15, 60])[1 + m % 3],
                   (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (m + s) % 3], '{}'
            FROM generate_series(1, $2::int) AS s, generate_series(0, $3::int - 1) AS m""",
            t0, symbols, minutes, bar_seconds / 2 if off_bar else 0.0)
        await conn.execute("VACUUM ANALYZE market_conditions")
        await conn.execute("VACUUM ANALYZE model_predictions")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    server = settings.database_url
    base = server.rsplit("/", 1)[0]
    name, clone = f"cie_vbench_{os.getpid()}", f"cie_vbench_{os.getpid()}_baseline"
    minutes = args.predictions // args.symbols
    await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}"')
    started = time.perf_counter()
    await build(f"{base}/{name}", args.symbols, minutes, args.timescaledb,
                args.bars_per_minute, args.off_bar)
    print(f"built {args.symbols * minutes:,} predictions and their bars in "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    await admin(server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
                f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)',
                f'CREATE DATABASE "{clone}" TEMPLATE "{name}"',
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    try:
        conn = await asyncpg.connect(f"{base}/{clone}")
        try:
            started = time.perf_counter()
            await conn.execute("UPDATE model_predictions SET actual_return = 0, "
                               "actual_direction = 'NEUTRAL', prediction_accuracy = false, "
                               "validated_at = now()")
            baseline = time.perf_counter() - started
        finally:
            await conn.close()
        print(f"baseline: bare UPDATE of every prediction {baseline:.1f}s", flush=True)

        env = {**os.environ, "DATABASE_URL": f"{base}/{name}", "CIE_LOG_FORMAT": "json",
               "CIE_VALIDATOR_SWEEP_BATCH": str(args.batch)}
        if args.lookup_past_bars is not None:
            env["CIE_VALIDATOR_LOOKUP_PAST_BARS"] = str(args.lookup_past_bars)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "validate", "--once", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        elapsed = time.perf_counter() - started
        assert proc.returncode == 0, err.decode()[-3000:]
        conn = await asyncpg.connect(f"{base}/{name}")
        try:
            done = await conn.fetchval(
                "SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL")
        finally:
            await conn.close()
        print(f"validator: {done:,} predictions validated in {elapsed:.1f}s "
              f"({done / elapsed:,.0f}/s); {elapsed / baseline:.2f}x the bare UPDATE", flush=True)
    finally:
        if not args.keep:
            await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                        f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--bars-per-minute", type=int, default=1)
    parser.add_argument("--off-bar", action="store_true",
                        help="predictions half a bar after a bar's time")
    parser.add_argument("--lookup-past-bars", type=int,
                        help="CIE_VALIDATOR_LOOKUP_PAST_BARS for the validator (default: its own)")
    parser.add_argument("--timescaledb", action="store_true",
                        help="take the TimescaleDB schema path (the extension must be installed)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
