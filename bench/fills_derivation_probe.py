"""Would deriving the trades on the server make the fills consumer faster? (#43, part 2)

    deploy/local/stack.sh up
    .venv/bin/python bench/fills_derivation_probe.py [--fills 10000] [--runs 5] [--timescaledb]

The fills consumer derives each touched trade from its ledger in Python (``Decimal``,
consumers/ingest/trades.py) and copies the trade rows into trade_outcomes. #43 proposed one
statement over the stored fills instead. This probe stores one flush's worth of fills (the
ingest benchmark's: four a trade, every value varied at full precision), then times on the
same rows, in the same run:

- the consumer's way: ``trades.derive`` over every ledger, rendering the rows as COPY text,
  and the COPY into trade_outcomes (the server's part);
- the server's way: one statement that derives every trade from trade_fills (window for the
  opening side, aggregates for the sums, half-even rounding done exactly with integer
  ``div``/``mod``, as ``Decimal.quantize`` does), first as a bare SELECT, then as the write
  the consumer would send: re-keying, the rollup's marks and the upsert in one statement;

and checks that the two ways give the same rows to the last digit. The statement lives here,
not in the package: measured, it costs the server more than the consumer's derivation and
COPY cost both sides together (bench/README.md, "Fills derived on the server").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ingest_bench, beside this script
from ingest_bench import create_database, drop_database, make_fills, median_ms

from consumers.ingest import trades
from consumers.ingest.pipelines.fills import FILL_COLUMNS, OUTCOME_COLUMNS
from consumers.platform.db import copy_line, copy_lines
from consumers.platform.settings import load_settings

# round(n / d, places) half to even, exactly: integer quotient and remainder of |n| 10^places
# by |d|, the quotient moved up when the remainder is over half of |d|, or half and the
# quotient odd. One SQL expression, so the planner inlines it.
HALF_EVEN = """
CREATE FUNCTION pg_temp.half_even_quotient(a numeric, b numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT div(a, b) + CASE WHEN 2 * mod(a, b) > b
                                 OR (2 * mod(a, b) = b AND mod(div(a, b), 2) = 1)
                            THEN 1 ELSE 0 END
$$;
CREATE FUNCTION pg_temp.div_half_even(n numeric, d numeric, places integer)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT round(sign(n) * sign(d)
                 * pg_temp.half_even_quotient(abs(n) * 10::numeric ^ places, abs(d))
                 / 10::numeric ^ places, places)
$$;
"""

# The trades $1 derived from all their stored fills, by the rules of consumers/ingest/trades.py
# (the ledgers are consistent: the consumer checks each fill before it stores it).
DERIVED = """
ledger AS (
    SELECT trade_id, strategy_id, model_version, symbol, side, quantity, price, commission,
           intended_price, filled_at, order_submitted_at,
           first_value(side) OVER (PARTITION BY trade_id ORDER BY filled_at, fill_id) AS opening
    FROM trade_fills
    WHERE trade_id = ANY($1::uuid[])
),
totals AS (
    SELECT trade_id, min(strategy_id) AS strategy_id, min(model_version) AS model_version,
           min(symbol) AS symbol, min(opening) AS opening, min(filled_at) AS entry_time,
           max(filled_at) AS last_fill,
           sum(quantity) FILTER (WHERE side = opening) AS opened,
           sum(quantity * price) FILTER (WHERE side = opening) AS opened_value,
           sum(quantity) FILTER (WHERE side <> opening) AS closed,
           sum(quantity * price) FILTER (WHERE side <> opening) AS closed_value,
           sum(commission) AS commission,
           sum(quantity * CASE WHEN side = 'BUY' THEN price - intended_price
                               ELSE intended_price - price END) AS slipped,
           sum(quantity) FILTER (WHERE intended_price IS NOT NULL) AS slipped_quantity,
           coalesce(sum(extract(epoch FROM filled_at - order_submitted_at) * 1000000), 0)
               AS latency_us,
           count(order_submitted_at) AS latency_count
    FROM ledger
    GROUP BY trade_id
),
priced AS (
    SELECT *, CASE WHEN closed = opened THEN last_fill END AS exit_time,
           CASE WHEN opening = 'BUY' THEN closed_value - opened_value
                ELSE opened_value - closed_value END AS gross
    FROM totals
),
derived AS (
    SELECT trade_id, strategy_id, model_version, symbol,
           CASE WHEN opening = 'BUY' THEN 'LONG' ELSE 'SHORT' END AS direction,
           entry_time, exit_time,
           pg_temp.div_half_even(opened_value, opened, 8) AS entry_price,
           pg_temp.div_half_even(closed_value, closed, 8) AS exit_price,
           opened AS quantity,
           CASE WHEN exit_time IS NOT NULL THEN pg_temp.div_half_even(gross, 1, 4) END
               AS gross_pnl,
           CASE WHEN exit_time IS NOT NULL THEN pg_temp.div_half_even(gross - commission, 1, 4)
           END AS net_pnl,
           commission,
           pg_temp.div_half_even(slipped, slipped_quantity, 8) AS slippage,
           trunc(extract(epoch FROM exit_time - entry_time))::integer AS duration_seconds,
           CASE WHEN exit_time IS NULL THEN 'OPEN'
                WHEN pg_temp.div_half_even(gross - commission, 1, 4) > 0 THEN 'WIN'
                WHEN pg_temp.div_half_even(gross - commission, 1, 4) < 0 THEN 'LOSS'
                ELSE 'BREAKEVEN' END AS outcome_type,
           latency_us::bigint AS fill_latency_us_sum, latency_count::integer AS fill_latency_count
    FROM priced
)"""

SELECT = f"WITH {DERIVED} SELECT {', '.join(OUTCOME_COLUMNS)} FROM derived"

# What the consumer would send instead of its COPY (or staging, re-keying and upsert).
STORE = f"""
WITH {DERIVED},
rekeyed AS (
    DELETE FROM trade_outcomes AS o USING derived AS d
    WHERE o.trade_id = d.trade_id AND o.entry_time <> d.entry_time
),
marked AS (
    INSERT INTO rollup_pending (kind, strategy_id, model_version, day)
    SELECT DISTINCT 'trade', strategy_id, model_version, (exit_time AT TIME ZONE 'UTC')::date
    FROM (SELECT strategy_id, model_version, exit_time FROM trade_outcomes
          WHERE trade_id = ANY($1::uuid[]) AND exit_time IS NOT NULL
          UNION ALL
          SELECT strategy_id, model_version, exit_time FROM derived
          WHERE exit_time IS NOT NULL) AS changed
)
INSERT INTO trade_outcomes ({', '.join(OUTCOME_COLUMNS)})
SELECT {', '.join(OUTCOME_COLUMNS)} FROM derived
ON CONFLICT (trade_id, entry_time) DO UPDATE SET
    {', '.join(f'{c} = EXCLUDED.{c}' for c in OUTCOME_COLUMNS[1:])}, updated_at = now()"""


async def probe(conn: asyncpg.Connection, fills: int, runs: int) -> None:
    events = make_fills(fills)
    await conn.copy_records_to_table("trade_fills", columns=FILL_COLUMNS, records=[
        tuple(getattr(f, c) for c in FILL_COLUMNS) for f in events])
    await conn.execute("ANALYZE trade_fills")
    await conn.execute(HALF_EVEN)
    ledgers: dict[Any, list[trades.FillLike]] = {}
    for f in events:
        ledgers.setdefault(f.trade_id, []).append(f)
    trade_ids = sorted(ledgers)

    def derive() -> list[trades.TradeOutcome]:
        return [trades.derive(ledger) for ledger in ledgers.values()]

    def render(outcomes: list[trades.TradeOutcome]) -> list[str]:
        return [copy_line(tuple(getattr(o, c) for c in OUTCOME_COLUMNS)) for o in outcomes]

    outcomes = derive()
    lines = render(outcomes)

    async def python_derive() -> None:
        derive()

    async def python_render() -> None:
        render(outcomes)

    async def copy_rows() -> None:
        async with rolled_back(conn):
            await copy_lines(conn, "trade_outcomes", OUTCOME_COLUMNS, lines)

    async def server_select() -> None:
        await conn.fetch(SELECT, trade_ids)

    async def server_store() -> None:
        async with rolled_back(conn):
            await conn.execute(STORE, trade_ids)

    figures = {}
    for name, step in (("python_derive", python_derive), ("python_render", python_render),
                       ("copy_rows", copy_rows), ("server_select", server_select),
                       ("server_store", server_store)):
        figures[name] = await median_ms(step, runs)
    same = sorted(tuple(r.values()) for r in await conn.fetch(SELECT, trade_ids)) == sorted(
        tuple(getattr(o, c) for c in OUTCOME_COLUMNS) for o in outcomes)
    consumer = figures["python_derive"] + figures["python_render"]
    print(f"{len(events):,} fills, {len(trade_ids):,} trades (median of {runs}):")
    print(f"  consumer's way: derive {figures['python_derive']:.1f} ms + render "
          f"{figures['python_render']:.1f} ms in the consumer, COPY {figures['copy_rows']:.1f} ms"
          f" on the server = {consumer + figures['copy_rows']:.1f} ms")
    print(f"  server's way:   SELECT {figures['server_select']:.1f} ms; the whole write "
          f"{figures['server_store']:.1f} ms on the server "
          f"= {figures['server_store'] / (consumer + figures['copy_rows']):.2f}x the "
          f"consumer's way, {figures['server_store'] / figures['copy_rows']:.2f}x its COPY")
    print(f"  same rows to the last digit: {same}")
    if not same:
        raise SystemExit(1)


@contextlib.asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that marks the rollup as the consumer's writes do (schema/18) and is
    rolled back: trade_outcomes is as it was for the next timing."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("SET LOCAL cie.writer_marks_rollup = 'on'")
        yield
    finally:
        await transaction.rollback()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timescaledb", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    name = f"cie_probe_{os.getpid()}"
    url = await create_database(settings, name, args.timescaledb)
    try:
        conn = await asyncpg.connect(url)
        try:
            await probe(conn, args.fills, args.runs)
        finally:
            await conn.close()
    finally:
        await drop_database(settings, name)


if __name__ == "__main__":
    asyncio.run(main())
