"""A live validator's batch against the predictions stored before it (schema/31).

    deploy/local/stack.sh up
    .venv/bin/python bench/validator_batch_bench.py [--hours 0.5,2,6] [--bars-per-second 1]
        [--timescaledb]

50 symbols with ``--bars-per-second`` bars a second each and three predictions (1, 5 and 15
minute horizons) every fifth bar, validated up to three minutes before the end, as a validator
that keeps up leaves them (the soak's traffic: ``--bars-per-second 36 --hours 0.17``). After
loading each number of hours it times, the median of five:
- ``predictions_near_bars`` for a batch of the last 10,000 bars (the same span of every
  symbol), as the validator's bar-driven path runs it;
- the same candidates found as before schema/31 (one range of predicted_at as long as the
  longest horizon, a day), the statement this replaced;
- the baseline: fetching the same candidates by their primary keys (one index lookup each;
  a statement that reads index ranges can take less).
Then the index's cost to the ingest: COPY of 200,000 predictions in batches of 1,000 (one
transaction each, as the consumer writes them) with and without idx_model_predictions_horizon,
twice each, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ingest_bench, beside this script
from ingest_bench import create_database, drop_database, median_ms

from consumers.analytics.validator import ValidatorSettings
from consumers.platform.db import queries
from consumers.platform.settings import load_settings

SYMBOLS = [f"S{i:03d}" for i in range(50)]
HORIZONS = (1, 5, 15)
BATCH_BARS = 10_000
PREDICTION_COLUMNS = ("prediction_id", "model_version", "model_type", "symbol", "predicted_at",
                      "prediction_horizon_minutes", "predicted_direction", "confidence_score",
                      "feature_vector")

# predictions_near_bars as it was before schema/31, for the comparison
BEFORE_31 = """
SELECT p.prediction_id, p.predicted_at, p.symbol,
       p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) AS horizon_end
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(symbol, first_bar, last_bar)
CROSS JOIN LATERAL (
    SELECT least(coalesce(min(m."timestamp"), r.last_bar), r.last_bar + $4::interval) AS reach,
           coalesce(max(m."timestamp"), r.last_bar) AS latest
    FROM market_conditions AS m
    WHERE m.symbol = r.symbol AND m."timestamp" > r.last_bar
) AS n
JOIN model_predictions AS p
  ON p.symbol = r.symbol
 AND p.predicted_at BETWEEN r.first_bar - $5::interval AND n.reach
WHERE ((p.predicted_at BETWEEN r.first_bar AND n.reach)
       OR (p.predicted_at + make_interval(mins => p.prediction_horizon_minutes)
           BETWEEN r.first_bar AND n.reach))
      AND p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) <= n.latest
   OR (p.validated_at IS NULL
       AND p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) <= r.last_bar)
ORDER BY p.prediction_id, p.predicted_at"""

BY_KEYS = """
SELECT p.prediction_id, p.predicted_at, p.symbol,
       p.predicted_at + make_interval(mins => p.prediction_horizon_minutes) AS horizon_end
FROM unnest($1::uuid[], $2::timestamptz[]) AS k(prediction_id, predicted_at)
JOIN model_predictions AS p USING (prediction_id, predicted_at)
ORDER BY p.prediction_id, p.predicted_at"""


async def load(conn: asyncpg.Connection, start: datetime, stop: datetime,
               rng: random.Random, bars_per_second: int) -> None:
    """Bars and predictions from ``start`` to ``stop``, prices and confidences varied."""
    bars, predictions = [], []
    step = timedelta(seconds=1) / bars_per_second
    at, n = start, 0
    while at < stop:
        for symbol in SYMBOLS:
            close = Decimal(rng.randint(2_000_000_000, 90_000_000_000)).scaleb(-8)
            bars.append((symbol, at, close, close, close, close, rng.randint(1, 10**6)))
            if n % 5 == 0:
                predictions += [_prediction(rng, symbol, at, h) for h in HORIZONS]
        at += step
        n += 1
    await conn.copy_records_to_table(
        "market_conditions", records=bars,
        columns=("symbol", "timestamp", "open", "high", "low", "close", "volume"))
    await conn.copy_records_to_table("model_predictions", records=predictions,
                                     columns=PREDICTION_COLUMNS)


def _prediction(rng: random.Random, symbol: str, at: datetime, horizon: int) -> tuple[Any, ...]:
    return (uuid.uuid4(), "dir-v3.1", "direction", symbol, at, horizon,
            rng.choice(("LONG", "SHORT", "NEUTRAL")),
            Decimal(rng.randint(5000, 9500)).scaleb(-4),
            json.dumps({"rsi_14": str(Decimal(rng.randint(0, 10**8)).scaleb(-6))}))


async def candidates(conn: asyncpg.Connection, hours: list[float], bars_per_second: int,
                     rules: ValidatorSettings) -> list[dict[str, Any]]:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    batch_last = end - timedelta(minutes=3)
    span = timedelta(seconds=1) / bars_per_second * (BATCH_BARS // len(SYMBOLS) - 1)
    args = (SYMBOLS, [batch_last - span] * len(SYMBOLS),
            [batch_last] * len(SYMBOLS), rules.gap_tolerance, rules.max_horizon)
    rng = random.Random(31)
    loaded, results = 0.0, []
    for h in sorted(hours):
        await load(conn, end - timedelta(hours=h), end - timedelta(hours=loaded), rng,
                   bars_per_second)
        loaded = h
        await conn.execute(
            "UPDATE model_predictions SET validated_at = now() WHERE validated_at IS NULL "
            "AND predicted_at + make_interval(mins => prediction_horizon_minutes) < $1",
            batch_last)
        await conn.execute("VACUUM ANALYZE model_predictions")
        await conn.execute("VACUUM ANALYZE market_conditions")
        keys = await conn.fetch(queries("validator")["predictions_near_bars"], *args)
        before = await conn.fetch(BEFORE_31, *args)
        assert [tuple(k) for k in keys] == [tuple(k) for k in before], "the two disagree"
        ids, times = [k["prediction_id"] for k in keys], [k["predicted_at"] for k in keys]
        now_ms = await median_ms(lambda: conn.fetch(
            queries("validator")["predictions_near_bars"], *args))
        before_ms = await median_ms(lambda: conn.fetch(BEFORE_31, *args))
        baseline_ms = await median_ms(lambda ids=ids, times=times: conn.fetch(  # type: ignore[misc]
            BY_KEYS, ids, times))
        stored = await conn.fetchval("SELECT count(*) FROM model_predictions")
        result = {"hours": h, "predictions_stored": stored, "candidates": len(keys),
                  "ms": round(now_ms, 1), "before_31_ms": round(before_ms, 1),
                  "by_keys_ms": round(baseline_ms, 1),
                  "ratio": round(now_ms / baseline_ms, 2),
                  "before_31_ratio": round(before_ms / baseline_ms, 2)}
        print(f"{h:g} h stored ({stored:,} predictions), {len(keys):,} candidates: "
              f"{now_ms:.0f} ms = {now_ms / baseline_ms:.2f}x fetching them by key "
              f"({baseline_ms:.0f} ms); before schema/31 {before_ms:.0f} ms = "
              f"{before_ms / baseline_ms:.2f}x", flush=True)
        results.append(result)
    return results


async def insert_cost(conn: asyncpg.Connection) -> list[float]:
    """COPY of 200,000 predictions without and with the index: the time with it over the
    time without, per alternation."""
    rng = random.Random(32)
    start = datetime.now(UTC) - timedelta(hours=3)
    rows = [_prediction(rng, SYMBOLS[i % 50], start + timedelta(milliseconds=20 * i),
                        HORIZONS[i % 3]) for i in range(200_000)]
    definition = await conn.fetchval(
        "SELECT pg_get_indexdef('idx_model_predictions_horizon'::regclass)")

    async def copy_all() -> float:
        await conn.execute("TRUNCATE model_predictions")
        started = time.perf_counter()
        for i in range(0, len(rows), 1000):
            async with conn.transaction():
                await conn.copy_records_to_table("model_predictions", records=rows[i:i + 1000],
                                                 columns=PREDICTION_COLUMNS)
        return time.perf_counter() - started

    ratios = []
    for _ in range(2):
        await conn.execute("DROP INDEX idx_model_predictions_horizon")
        without = await copy_all()
        await conn.execute(definition)
        with_index = await copy_all()
        ratios.append(round(with_index / without, 3))
        print(f"COPY of 200,000 predictions: {without:.2f} s without the index, "
              f"{with_index:.2f} s with it = {with_index / without:.3f}x", flush=True)
    return ratios


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.5, 2.0, 6.0])
    parser.add_argument("--bars-per-second", type=int, default=1)
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the results here, as JSON")
    args = parser.parse_args()
    settings = load_settings()
    rules = ValidatorSettings.from_settings(settings)
    name = f"cie_validator_batch_{os.getpid()}"
    url = await create_database(settings, name, args.timescaledb)
    try:
        conn = await asyncpg.connect(url)
        try:
            results = {"path": "timescaledb" if args.timescaledb else "plain",
                       "batches": await candidates(conn, args.hours, args.bars_per_second,
                                                  rules),
                       "copy_with_index_ratio": await insert_cost(conn)}
        finally:
            await conn.close()
    finally:
        await drop_database(settings, name)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
