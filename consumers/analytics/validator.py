"""The validator: prediction outcomes and trade excursions, known only after the fact.

It runs as its own consumer group on the bars and fills topics (each batch re-validates the
predictions and trades those bars or fills can affect) plus a periodic sweep that catches
whatever was missed, e.g. after downtime. All of it is set-based SQL over bounded batches
(schema/queries/validator.sql); the rules are in docs/analytics.md ("Validation").

Several validators may run at once: each transaction takes advisory locks on the symbols it
reads bars of, then on the trades it writes, each in sorted order, so they serialise without
deadlocks; and every write is a pure function of the stored bars, so running twice changes
nothing. No row locks: TimescaleDB cannot lock tuples in compressed chunks, which still get
late and corrected bars.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import structlog

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.ingest.pipelines.base import Pipeline, Rejection
from consumers.platform import metrics, periodic
from consumers.platform.db import Conn, queries
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

EXCURSION_SWEEP_LOOKBACK = timedelta(days=7)
_NO_CURSOR = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


@dataclass(frozen=True)
class ValidatorSettings:
    gap_tolerance: timedelta
    neutral_band: Decimal
    max_horizon: timedelta
    ingest_wait: timedelta
    # Instants off a bar's time find their bars by an index lookup each when their span holds
    # more bars than this per instant, else by merging the span's bars (validate_predictions):
    # a lookup costs as much as merging 10-40 bars (bench/README.md, the validator).
    lookup_past_bars: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidatorSettings:
        return cls(
            gap_tolerance=timedelta(seconds=settings.validator_gap_tolerance_seconds),
            neutral_band=settings.validator_neutral_band,
            max_horizon=timedelta(minutes=settings.validator_max_horizon_minutes),
            ingest_wait=timedelta(seconds=settings.validator_ingest_wait_seconds),
            lookup_past_bars=settings.validator_lookup_past_bars,
        )


def bar_ranges(bars: Sequence[Bar]) -> tuple[list[str], list[datetime], list[datetime]]:
    """Per symbol, the earliest and latest bar time in the batch (as parallel arrays)."""
    spans: dict[str, list[datetime]] = {}
    for bar in bars:
        span = spans.setdefault(bar.symbol, [bar.timestamp, bar.timestamp])
        span[0] = min(span[0], bar.timestamp)
        span[1] = max(span[1], bar.timestamp)
    symbols = sorted(spans)
    return symbols, [spans[s][0] for s in symbols], [spans[s][1] for s in symbols]


EXCURSION_LIMIT = Decimal("1e14")  # the excursions are DECIMAL(18, 4)


async def validate(conn: Conn, rules: ValidatorSettings, keys: Sequence[asyncpg.Record]) -> int:
    """Compute and store the outcomes of the given predictions; returns how many changed.

    Must run in a transaction: it marks the rollup's pending days itself (one row per model
    version and day, not one per prediction from the row trigger; schema/17).
    """
    if not keys:
        return 0
    sql = queries("validator")
    await conn.execute(sql["lock_symbols"], sorted({k["symbol"] for k in keys}))
    await conn.execute(sql["writer_marks_rollup"])
    lags: list[float] = []
    for window in _time_windows(keys):
        result = await conn.fetchrow(
            sql["validate_predictions"],
            [k["prediction_id"] for k in window], [k["predicted_at"] for k in window],
            [k["symbol"] for k in window], [k["horizon_end"] for k in window],
            rules.gap_tolerance, rules.neutral_band, window[0]["predicted_at"],
            max(k["horizon_end"] for k in window), window[-1]["predicted_at"],
            rules.lookup_past_bars)
        assert result is not None
        lags += result["lags"]
        _count_unrepresentable("prediction_return", result["skipped_ids"],
                               result["skipped_returns"])
    for lag in lags:
        metrics.VALIDATION_LAG.observe(max(0.0, lag))
    metrics.PREDICTIONS_VALIDATED.inc(len(lags))
    return len(lags)


KEY_WINDOW = timedelta(days=1)


def _time_windows(keys: Sequence[asyncpg.Record]) -> list[list[asyncpg.Record]]:
    """The keys in runs of predictions made within KEY_WINDOW of each other.

    Each run is validated by one statement whose bar lookups are bounded to the run's time
    span, so on TimescaleDB a statement touches a few daily chunks, not the whole backlog's.
    """
    windows: list[list[asyncpg.Record]] = []
    for key in sorted(keys, key=lambda k: k["predicted_at"]):
        if windows and key["predicted_at"] - windows[-1][0]["predicted_at"] <= KEY_WINDOW:
            windows[-1].append(key)
        else:
            windows.append([key])
    return windows


async def update_excursions(conn: Conn, trade_ids: Sequence[uuid.UUID]) -> int:
    """Compute and store the excursions of the given trades; returns how many changed.

    Must run in a transaction. The bars' scan runs under the trades' symbols' locks (so a
    validator's older view never overwrites a newer one's), the write under the trades' locks,
    which the fills consumer shares: it waits for the write alone.
    """
    if not trade_ids:
        return 0
    sql = queries("validator")
    ids = sorted(set(trade_ids))
    symbols = [r["symbol"] for r in await conn.fetch(sql["trade_symbols"], ids)]
    await conn.execute(sql["lock_symbols"], symbols)
    excursions = await conn.fetch(sql["excursions"], ids)
    fit: list[asyncpg.Record] = []
    skipped: list[asyncpg.Record] = []
    for e in excursions:
        fits = abs(e["favorable"]) < EXCURSION_LIMIT and abs(e["adverse"]) < EXCURSION_LIMIT
        (fit if fits else skipped).append(e)
    _count_unrepresentable("trade_excursion", [e["trade_id"] for e in skipped],
                           [max(e["favorable"], e["adverse"]) for e in skipped])
    if not fit:
        return 0
    await conn.execute(sql["lock_trades"], sorted(e["trade_id"] for e in fit))
    rows = await conn.fetch(
        sql["write_excursions"], *_columns(fit, "trade_id", "entry_time", "favorable", "adverse"),
        min(e["entry_time"] for e in fit), max(e["entry_time"] for e in fit),
        *_columns(fit, "exit_time", "direction", "entry_price", "quantity"))
    metrics.TRADES_UPDATED.inc(len(rows))
    return len(rows)


def _columns(records: Sequence[asyncpg.Record], *names: str) -> list[list[Any]]:
    return [[r[name] for r in records] for name in names]


def _count_unrepresentable(kind: str, ids: Sequence[Any], values: Sequence[Decimal]) -> None:
    """Rows whose values their DECIMAL column cannot hold (absurd bars: a price from 1e-8 to
    1e9) are skipped, counted and logged: one of them must not fail the batch."""
    if not ids:
        return
    metrics.VALIDATOR_UNREPRESENTABLE.labels(kind).inc(len(ids))
    log.warning("validator.value_out_of_range", kind=kind, count=len(ids),
                ids=[str(i) for i in ids[:10]], values=[str(v) for v in values[:10]])


async def wait_until_ingested(conn: Conn, bars: Sequence[Bar], wait: timedelta) -> bool:
    """True once the ingest consumer has stored these bars as they are (bounded wait)."""
    latest = {(b.symbol, b.timestamp): b for b in bars}  # the last version of each bar
    args = (
        [k[0] for k in latest], [k[1] for k in latest], [b.close for b in latest.values()],
        [b.high for b in latest.values()], [b.low for b in latest.values()])
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        if await conn.fetchval(queries("validator")["bars_visible"], *args) == len(latest):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)


class ValidatorBarsPipeline(Pipeline):
    """bars (validator's group): re-validate what the batch's bars can change."""

    name = "validator-bars"
    event_type = Bar

    def __init__(self, rules: ValidatorSettings) -> None:
        super().__init__()
        self.rules = rules

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        bars: Sequence[Bar] = events
        if not await wait_until_ingested(conn, bars, self.rules.ingest_wait):
            log.warning("validator.bars_not_ingested", bars=len(bars),
                        waited_seconds=self.rules.ingest_wait.total_seconds())
        symbols, firsts, lasts = bar_ranges(bars)
        sql = queries("validator")
        # every symbol this transaction may lock, at once and in order: validate and
        # update_excursions then lock subsets of them, and two validators cannot deadlock
        await conn.execute(sql["lock_symbols"], symbols)
        keys = await conn.fetch(sql["predictions_near_bars"], symbols, firsts, lasts,
                                self.rules.gap_tolerance, self.rules.max_horizon)
        await validate(conn, self.rules, keys)
        trades = await conn.fetch(sql["trades_near_bars"], symbols, firsts, lasts)
        await update_excursions(conn, [t["trade_id"] for t in trades])
        return []


class ValidatorFillsPipeline(Pipeline):
    """fills (validator's group): excursions of the trades the fills belong to."""

    name = "validator-fills"
    event_type = Fill

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        await update_excursions(conn, [fill.trade_id for fill in events])
        return []


@dataclass
class SweepReport:
    predictions_validated: int = 0
    trades_updated: int = 0
    backlog: int = 0


async def sweep(pool: asyncpg.Pool, rules: ValidatorSettings, *, batch: int) -> SweepReport:
    """One pass over the backlog (each batch its own transaction), then open trades."""
    sql = queries("validator")
    report = SweepReport()

    async def backlog_after(cursor: tuple[datetime, uuid.UUID]) -> list[asyncpg.Record]:
        async with pool.acquire() as conn:
            return list(await conn.fetch(sql["predictions_backlog"], *cursor, batch))

    # The next batch's keys are read while this batch is validated: they lie after this
    # batch's last key, so this batch's writes cannot change which they are.
    upcoming = asyncio.ensure_future(backlog_after(_NO_CURSOR))
    try:
        while True:
            keys = await upcoming
            if len(keys) == batch:
                upcoming = asyncio.ensure_future(
                    backlog_after((keys[-1]["predicted_at"], keys[-1]["prediction_id"])))
            async with pool.acquire() as conn, conn.transaction():
                report.predictions_validated += await validate(conn, rules, keys)
            if len(keys) < batch:
                break
    finally:
        upcoming.cancel()  # a read nobody will use (no-op once done); its error was raised
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upcoming
    async with pool.acquire() as conn:
        since = datetime.now(UTC) - EXCURSION_SWEEP_LOOKBACK
        trade_ids = [r["trade_id"] for r in await conn.fetch(sql["trades_to_sweep"], since)]
        for start in range(0, len(trade_ids), batch):
            async with conn.transaction():
                report.trades_updated += await update_excursions(
                    conn, trade_ids[start:start + batch])
        report.backlog = int(await conn.fetchval(sql["predictions_backlog_size"]))
    metrics.VALIDATION_BACKLOG.set(report.backlog)
    log.info("validator.swept", predictions_validated=report.predictions_validated,
             trades_updated=report.trades_updated, backlog=report.backlog)
    return report


async def sweep_forever(pool: asyncpg.Pool, rules: ValidatorSettings, *, batch: int, every: float,
                        stop: asyncio.Event) -> None:
    """The periodic sweep (consumers/platform/periodic.py: a failed sweep is retried at the
    next period, a fatal failure stops the process)."""
    async def step() -> None:
        await sweep(pool, rules, batch=batch)

    await periodic.every(every, step, stop, name="validator.sweep")
