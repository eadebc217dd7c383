"""Rollup benchmark: one year of trades, beside a bare aggregate of the same rows in the same run.

    deploy/local/stack.sh up
    .venv/bin/python bench/rollup_bench.py [--trades 1000000] [--strategies 20] \
        [--predictions 100000] [--timescaledb]

Builds (server-side) `--trades` closed trades over 2025 across `--strategies` strategies and two
model versions, each with two fills that carry order_submitted_at (and the trade row their
summed latencies, as the ingest derives them), and `--predictions`
validated predictions with bars for their regimes, each with its start bar's regime recorded
as the validator records it (schema/24). Every row is marked as changed, as live
ingestion would: the trades as the fills consumer marks them (one mark per strategy, model
version and exit day per flush, `--trades-per-flush` trades closed a flush, in exit order),
the predictions by the per-row trigger. Then times
- baselines: one bare GROUP BY of every trade by (strategy, model version, exit day) with count
  and sums, and the same joined to every trade's fill latencies (the reads no rollup can avoid);
- rollup: `cie rollup` consuming every mark (the whole year: the worst case);
- incremental: the next run after one late trade (one day, week and month recomputed);
- full: `cie rollup --full` with nothing changed (everything recomputed, nothing rewritten);
- live day: `--live-predictions` made yesterday (a live day, whose tallies the rollup keeps,
  schema/29), a run after a few of them change in one quarter hour, and the whole day's
  recount that every run made before.
Reports the times and the rollup/baseline ratio (the machine is shared: compare ratios). The
baselines run without JIT, as the rollup does (schema/queries/rollup.sql plan_settings): on
TimescaleDB JIT made the bare GROUP BY 1.15-1.24 s instead of 0.42-0.44 s, and the ratio
looked better than it was. The rollup's other settings (64 MB work_mem) made that GROUP BY
slower, so it keeps the server's. The bare GROUP BY runs again after the rollups and the
better of its two times is the baseline: it is one statement of under half a second, so a
neighbour's burst during it moved the ratio by a quarter between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg

from consumers.analytics.performance import RatioSettings
from consumers.analytics.rollup import RollupSettings, rollup
from consumers.platform import migrations
from consumers.platform.db import connect, queries
from consumers.platform.settings import load_settings

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
OPTIONS = RollupSettings(time_zone="UTC",
                        ratios=RatioSettings(Decimal(1_000_000), 252, Decimal("0.04")),
                        regime_bar_max_age=timedelta(minutes=5), replica_wait_seconds=30)

BASELINE = """
SELECT strategy_id, model_version, (exit_time AT TIME ZONE 'UTC')::date AS day, count(*),
       sum(net_pnl), sum(commission), sum(slippage), max(net_pnl), min(net_pnl)
FROM trade_outcomes WHERE outcome_type <> 'OPEN'
GROUP BY 1, 2, 3
"""
# the same, with every trade's fill latencies (avg_fill_time_ms needs them)
BASELINE_WITH_FILLS = """
SELECT t.strategy_id, t.model_version, (t.exit_time AT TIME ZONE 'UTC')::date AS day, count(*),
       sum(t.net_pnl), sum(t.commission), sum(t.slippage), max(t.net_pnl), min(t.net_pnl),
       sum(f.ms)
FROM trade_outcomes AS t
LEFT JOIN (SELECT trade_id, sum(extract(epoch FROM filled_at - order_submitted_at) * 1000) AS ms
           FROM trade_fills GROUP BY trade_id) AS f ON f.trade_id = t.trade_id
WHERE t.outcome_type <> 'OPEN'
GROUP BY 1, 2, 3
"""


async def build(conn: asyncpg.Connection, trades: int, strategies: int, predictions: int,
                trades_per_flush: int) -> None:
    async with conn.transaction():
        await add_trades(conn, trades, strategies, trades_per_flush)
    await conn.execute("""
        INSERT INTO trade_fills (fill_id, trade_id, strategy_id, model_version, symbol, side,
            quantity, price, filled_at, order_submitted_at)
        SELECT gen_random_uuid(), t.trade_id, t.strategy_id, t.model_version, t.symbol, f.side,
               10, 100, f.at, f.at - (40 + (hashtext(t.trade_id::text || f.side) & 255))
                   * interval '1 millisecond'
        FROM trade_outcomes AS t,
             LATERAL (VALUES ('BUY', t.entry_time), ('SELL', t.exit_time)) AS f(side, at)""")
    await add_bars_and_predictions(conn, predictions)
    for table in ("trade_outcomes", "trade_fills", "market_conditions", "model_predictions",
                  "rollup_pending"):
        await conn.execute(f"VACUUM ANALYZE {table}")


async def add_trades(conn: asyncpg.Connection, trades: int, strategies: int,
                     trades_per_flush: int) -> None:
    """In one transaction that marks its own changes, as the fills consumer's flushes do."""
    await conn.execute(queries("validator")["writer_marks_rollup"])
    # trade n: strategy n % strategies, model version n % 2, exit spread evenly over the year
    await conn.execute("""
        INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction,
            entry_time, exit_time, entry_price, exit_price, quantity, gross_pnl, net_pnl,
            commission, slippage, duration_seconds, outcome_type, fill_latency_us_sum,
            fill_latency_count)
        SELECT id, 'strategy-' || (n % $2), 'v' || (n / $2 % 2), 'S' || (n % 50), 'LONG',
               exit_time - interval '1 hour', exit_time, 100, 100 + move, 10,
               move * 10, move * 10 - 2, 2, 0.01 * (n % 3), 3600,
               CASE WHEN move * 10 - 2 > 0 THEN 'WIN' WHEN move * 10 - 2 < 0 THEN 'LOSS'
                    ELSE 'BREAKEVEN' END,
               1000 * (80 + (hashtext(id::text || 'BUY') & 255)
                          + (hashtext(id::text || 'SELL') & 255)), 2
        FROM generate_series(1, $1::int) AS n,
             LATERAL (SELECT md5(n::text)::uuid AS id,
                             $3::timestamptz + (n::float8 / $1 * 364 + 0.1) * interval '1 day'
                                 AS exit_time,
                             round((sin(n * 1.7) * 3)::numeric, 2) + 0.2 AS move) AS t""",
        trades, strategies, YEAR_START)
    await conn.execute("""
        INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
        SELECT 'trade', strategy_id, model_version, day
        FROM (SELECT DISTINCT strategy_id, model_version,
                     (exit_time AT TIME ZONE 'UTC')::date AS day,
                     (row_number() OVER (ORDER BY exit_time) - 1) / $1 AS flush
              FROM trade_outcomes) AS flushed""", trades_per_flush)


async def add_bars_and_predictions(conn: asyncpg.Connection, predictions: int) -> None:
    await conn.execute("""
        INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume,
            detected_regime)
        SELECT 'S' || s, $1::timestamptz + h * interval '1 hour', 100, 101, 99, 100, 1000,
               (ARRAY['trending_up', 'trending_down', 'ranging', 'volatile'])[1 + (h + s) % 4]
        FROM generate_series(0, 49) AS s, generate_series(0, 365 * 24) AS h""", YEAR_START)
    await conn.execute("""
        INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
            predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
            feature_vector, actual_direction, actual_return, prediction_accuracy, validated_at,
            start_regime)
        SELECT gen_random_uuid(), 'v' || (n % 2), 'direction', p.symbol, p.at, 15,
               (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + n % 3],
               round((0.34 + 0.65 * abs(sin(n)))::numeric, 4), '{}',
               (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (n / 3) % 3], 0.001,
               n % 3 = (n / 3) % 3, now(),
               -- as the validator records it (schema/24): the start bar's regime, the
               -- hourly bar's if at most 5 minutes old (an equi-join: a lookup per
               -- prediction through TimescaleDB's ChunkAppend took the build 13 minutes)
               coalesce(m.detected_regime, 'none')
        FROM generate_series(1, $1::int) AS n
        CROSS JOIN LATERAL (SELECT 'S' || (n % 50) AS symbol,
                                   $2::timestamptz + (n::float8 / $1 * 364) * interval '1 day'
                                       + interval '2 minutes' AS at) AS p
        LEFT JOIN market_conditions AS m
          ON m.symbol = p.symbol AND m.timestamp = date_bin('1 hour', p.at, $2::timestamptz)
         AND p.at - m.timestamp <= interval '5 minutes'""", predictions, YEAR_START)


async def live_day(conn: asyncpg.Connection, predictions: int) -> None:
    """Yesterday's predictions of one model version (a live day, its tallies kept): a run
    after a few changed predictions in one quarter hour, against a recount of the whole day
    (what every run did before schema/29)."""
    yesterday = datetime.combine(date.today() - timedelta(days=1), datetime.min.time(), UTC)
    await conn.execute("""
        INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
            predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
            feature_vector, actual_direction, actual_return, prediction_accuracy, validated_at,
            start_regime)
        SELECT gen_random_uuid(), 'live', 'direction', 'S' || (n % 50),
               $2::timestamptz + (n::float8 / $1) * interval '1 day', 15,
               (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + n % 3],
               round((0.34 + 0.65 * abs(sin(n)))::numeric, 4), '{}',
               (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (n / 3) % 3], 0.001,
               n % 3 = (n / 3) % 3, now(),
               (ARRAY['trending_up', 'trending_down', 'ranging', 'volatile', 'none'])[1 + n % 5]
        FROM generate_series(0, $1::int - 1) AS n""", predictions, yesterday)
    await conn.execute("VACUUM ANALYZE model_predictions")
    await timed(f"live day: {predictions:,} predictions, first run", rollup(conn, OPTIONS))
    await conn.execute("""
        UPDATE model_predictions SET actual_direction = 'LONG', prediction_accuracy = false
        WHERE model_version = 'live' AND predicted_direction <> 'LONG'
          AND predicted_at >= $1 AND predicted_at < $1 + interval '1 second'""",
        yesterday + timedelta(hours=12))
    run = await timed("live day: a run after changes in one quarter hour", rollup(conn, OPTIONS))
    whole = await timed("live day: its predictions recounted whole", conn.fetch(
        queries("rollup")["prediction_tallies"], ["live"], [yesterday],
        [yesterday + timedelta(days=1)], OPTIONS.regime_bar_max_age, "UTC", yesterday.date(),
        False))
    print(f"live day: a run / the whole day's recount: {run / whole:.2f}x")


async def timed(label: str, coroutine: object) -> float:
    started = time.perf_counter()
    await coroutine  # type: ignore[misc]
    seconds = time.perf_counter() - started
    print(f"{label:<44} {seconds:8.2f} s", flush=True)
    return seconds


async def run(args: argparse.Namespace) -> None:
    server = load_settings().database_url
    base = server.rsplit("/", 1)[0]
    name = f"cie_rbench_{os.getpid()}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await connect(f"{base}/{name}")
    try:
        await migrations.migrate(conn, use_timescaledb=bool(args.timescaledb))
        started = time.perf_counter()
        await build(conn, args.trades, args.strategies, args.predictions,
                    args.trades_per_flush)
        marks = await conn.fetchval("SELECT count(*) FROM rollup_pending")
        print(f"built {args.trades:,} trades, {2 * args.trades:,} fills, "
              f"{args.predictions:,} predictions ({marks:,} change marks) in "
              f"{time.perf_counter() - started:.1f}s; TimescaleDB: {args.timescaledb}",
              flush=True)
        await conn.execute("SET jit = off")
        baseline = await timed("baseline: bare GROUP BY of every trade", conn.fetch(BASELINE))
        with_fills = await timed("baseline: the same with fill latencies",
                                 conn.fetch(BASELINE_WITH_FILLS))
        first = await timed("rollup: every mark (the whole year)", rollup(conn, OPTIONS))
        await conn.execute("""
            INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol, direction,
                entry_time, exit_time, entry_price, exit_price, quantity, gross_pnl, net_pnl,
                commission, duration_seconds, outcome_type)
            VALUES (gen_random_uuid(), 'strategy-3', 'v1', 'S1', 'LONG', $1::timestamptz,
                    $1::timestamptz + interval '1h',
                    100, 101, 10, 10, 8, 2, 3600, 'WIN')""",
            datetime.combine(date(2025, 6, 10), datetime.min.time(), UTC))
        await timed("incremental: after one late trade", rollup(conn, OPTIONS))
        await timed("full: everything, nothing changed", rollup(conn, OPTIONS, full=True))
        again = await timed("baseline again: bare GROUP BY of every trade", conn.fetch(BASELINE))
        if args.live_predictions:
            await live_day(conn, args.live_predictions)
        rows = await conn.fetchval("SELECT count(*) FROM strategy_performance")
        live = await conn.fetchval("SELECT count(*) FROM model_performance")
        print(f"strategy_performance rows: {rows:,}; model_performance live rows: {live:,}")
        print(f"rollup / bare GROUP BY: {first / min(baseline, again):.2f}x (the better of "
              f"{baseline:.2f} s before and {again:.2f} s after); "
              f"rollup / GROUP BY with fills: {first / with_fills:.2f}x")
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--strategies", type=int, default=20)
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--live-predictions", type=int, default=500_000,
                        help="a live day's predictions (yesterday); 0: no live day case")
    parser.add_argument("--trades-per-flush", type=int, default=500,
                        help="closed trades a fills flush carries (their marks are distinct)")
    parser.add_argument("--timescaledb", action="store_true",
                        help="take the TimescaleDB schema path (the extension must be installed)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
