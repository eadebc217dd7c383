"""`cie rollup`: strategy_performance and model_performance from the facts, incrementally.

Writers mark what they change in ``rollup_pending`` (triggers, schema/09-rollups.sql). A run

1. takes a session advisory lock (runs are serialised; a second one waits, then finds little),
2. opens a repeatable-read transaction, reads the pending marks of its snapshot and deletes
   them in the same statement,
3. recomputes exactly the strategy periods (DAY, WEEK, MONTH of each touched exit day) and the
   live model days those marks touch, plus the live columns of the touched versions' offline
   evaluations, upserting only rows whose figures changed, and commits. The strategy periods
   are computed on the server in one statement (schema/queries/rollup.sql strategy_periods)
   from the trade days kept in a temporary table; the live model figures here, from the
   predictions' tallies, while the server computes the strategy periods. The tallies of the
   live days (today and the two before it) are kept between runs (schema/29): a run
   recounts only their marked quarter hours; an older day is recounted whole when it
   changes.

A mark committed after the snapshot is invisible to both the read and the delete, so it stays
for the next run; a failed run rolls its delete back: nothing is missed, and a repeated run
changes nothing. Reads of the facts can
go to a replica once it has replayed past the primary's position at the snapshot.
Figures and their definitions: consumers/analytics/performance.py and docs/analytics.md ("Rollups").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from consumers.analytics.performance import (
    PERIOD_TYPES,
    REGIMES,
    ModelFigures,
    PeriodType,
    PredictionTally,
    RatioSettings,
    Undefined,
    model_figures,
    money,
    period_end,
    period_start,
    ratio,
)
from consumers.errors import RollupError
from consumers.platform import periodic
from consumers.platform.db import Conn, queries
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

LOCK_KEY = 0x6369_6572  # pg_advisory_lock key of the rollup ("cier")
SERIALIZATION_RETRIES = 5
# Trade ranges closer than this are read by one scan (trade_days), the days between included.
TRADE_SCAN_GAP = timedelta(days=31)

# A prediction mark's quarter hour (schema/29): the unit in which the days whose tallies are
# kept are recounted. Those are today and the days before it, KEPT_DAYS in all: the live days,
# whose predictions are validated within their horizons (minutes to hours).
QUARTER = timedelta(minutes=15)
KEPT_DAYS = 3

StrategyKey = tuple[str, str]  # (strategy_id, model_version)
Day = TypeVar("Day", date, datetime)
T = TypeVar("T")
Period = tuple[PeriodType, date]



@dataclass(frozen=True)
class RollupSettings:
    time_zone: str
    ratios: RatioSettings
    regime_bar_max_age: timedelta  # a prediction's regime comes from a bar at most this old
    replica_wait_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RollupSettings:
        return cls(
            time_zone=settings.rollup_time_zone,
            ratios=RatioSettings(settings.rollup_capital_base, settings.rollup_periods_per_year,
                                 settings.rollup_risk_free_rate),
            regime_bar_max_age=timedelta(seconds=settings.validator_gap_tolerance_seconds),
            replica_wait_seconds=settings.rollup_replica_wait_seconds,
        )


@dataclass
class RollupReport:
    marks: int = 0
    strategy_periods_recomputed: int = 0
    strategy_periods_deleted: int = 0
    live_model_days_recomputed: int = 0
    live_model_days_deleted: int = 0
    offline_rows_updated: int = 0


async def rollup(conn: Conn, options: RollupSettings, *, reader: Conn | None = None,
                 full: bool = False) -> RollupReport:
    """One incremental run (``full``: everything counts as changed).

    ``reader``: a replica connection of this run's own; its session gets the rollup's plan
    settings (schema/queries/rollup.sql plan_settings), the primary's only this transaction.
    """
    started = time.perf_counter()
    await conn.execute(queries("rollup")["lock"], LOCK_KEY)
    try:
        for attempt in range(1, SERIALIZATION_RETRIES + 1):
            try:
                async with conn.transaction(isolation="repeatable_read"):
                    report = await _run(conn, reader or conn, options, full=full)
                break
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError) as exc:
                log.warning("rollup.retry", attempt=attempt, error=str(exc))
        else:
            raise RollupError(f"gave up after {SERIALIZATION_RETRIES} serialization failures")
    finally:
        await conn.execute(queries("rollup")["unlock"], LOCK_KEY)
    log.info("rollup.done", seconds=round(time.perf_counter() - started, 3), **vars(report))
    return report


async def _run(conn: Conn, reader: Conn, options: RollupSettings, *, full: bool) -> RollupReport:
    sql = queries("rollup")
    # The first statement takes the snapshot: every commit it sees is before this position
    # (read before this transaction writes: its own WAL reaches a replica only at commit).
    position = await conn.fetchval(sql["primary_lsn"])
    await conn.execute(sql["plan_settings"], True)
    if reader is not conn:  # not in this transaction: its session (the run's own connection)
        await reader.execute(sql["plan_settings"], False)
    horizons = await _horizons(conn, options.time_zone)
    if full:
        await conn.execute(sql["mark_every_trade"])
        await conn.execute(sql["mark_every_prediction"])
    kept_from = await _tallies_kept_from(conn, options, horizons["model_predictions"],
                                         start_over=full)
    last_id = await conn.fetchval(sql["last_pending_id"])
    if last_id is None:
        return RollupReport()
    kept_since = _quarter_of(_midnight(kept_from, ZoneInfo(options.time_zone)))
    marks = await conn.fetch(sql["consume_pending"], last_id, kept_since)
    if reader is not conn:
        await _wait_for_replica(reader, position, options.replica_wait_seconds)
    undefined: Counter[tuple[str, str]] = Counter()
    report = RollupReport(marks=len(marks))

    strategy_periods = _wanted_strategy_periods(
        {(m["strategy_id"], m["model_version"], m["day"]) for m in marks if m["kind"] == "trade"},
        options.time_zone, horizons["trade_outcomes"])
    model_days = _wanted_model_days({(m["model_version"], m["day"]) for m in marks},
                                    options.time_zone, horizons["model_predictions"])
    # The live model days' tallies: older days' recounted whole, the kept days' kept
    quarters = _recounted_quarters({(m["model_version"], m["day"], m["quarter"])
                                    for m in marks if m["kind"] == "prediction"})
    older = {version: {day for day in days if day < kept_from}
             for version, days in model_days.items()}
    tallies = [
        *await _recount_whole_days(reader, options, horizons["model_predictions"], older),
        *await _kept_tallies(conn, reader, options, kept_from, kept_since, model_days,
                             quarters),
    ]
    identity = {row["model_version"]: (row["model_type"], row["status"])
                for row in await reader.fetch(sql["model_identity"], list(model_days))}
    await _keep_trade_days(conn, reader, options, strategy_periods, model_days)
    # The server computes the strategy periods (on one core) while this process computes the
    # live model figures. Beside the trades' grouping, which has parallel workers, they
    # shared the cores with it: on 2 cores the grouping took 1.07 s instead of 0.7. Prepared
    # first, so that the task's first step sends the statement's execution itself.
    computing = await conn.prepare(sql["strategy_periods"])
    async with _meanwhile(computing.fetch(*_strategy_periods_args(options, strategy_periods))
                          ) as periods:
        with _phase("model_figures"):
            day_tallies = _tallies(tallies)
            figures = _model_figures(day_tallies, undefined)
    done = periods.result()
    pnl = {(row["model_version"], row["day"]): row["net_pnl"]
           for row in await conn.fetch(sql["model_day_pnl"])}
    live_upserts, live_deletes = _model_rows(model_days, figures, pnl, identity, undefined)
    for row in done:
        if row["kind"] == "undefined":
            undefined[(row["column_name"], row["reason"])] += row["n"]
        elif row["kind"] == "recomputed":
            report.strategy_periods_recomputed = row["n"]
        elif row["kind"] == "deleted":
            report.strategy_periods_deleted = row["n"]
    if live_upserts:
        await conn.execute(sql["upsert_live_model_days"],
                           *_numerics_as_text(_columns(live_upserts, LIVE_UPSERT_COLUMNS)))
    report.live_model_days_recomputed = len(live_upserts)
    if live_deletes:
        status = await conn.execute(sql["delete_live_model_days"], *_columns(live_deletes, 2))
        report.live_model_days_deleted = int(status.split()[-1])
    await conn.execute(sql["keep_model_day_calls"],
                       *_columns(_day_calls(model_days, day_tallies), 4))
    report.offline_rows_updated = await _offline_live_columns(
        conn, options, sorted(model_days), undefined)
    for (column, reason), count in sorted(undefined.items()):
        log.info("rollup.figure_undefined", column=column, reason=reason, rows=count)
    return report


async def rollup_forever(pool: asyncpg.Pool, options: RollupSettings, *, every: float,
                         stop: asyncio.Event) -> None:
    """Roll up every ``every`` seconds until ``stop`` (the validator's optional trigger).

    A failed run is logged and retried at the next period: the marks it did not consume stay.
    """
    async def step() -> None:
        try:
            async with pool.acquire() as conn:
                await rollup(conn, options)
        except RollupError as exc:  # the run could not finish; the next one will
            log.warning("rollup.failed", error=str(exc))

    await periodic.every(every, step, stop, name="rollup", wait_first=True)


# --- what to recompute, and the trades it reads ---------------------------------------------


def _wanted_strategy_periods(touched: set[tuple[str, str, date]], time_zone: str,
                             horizon: date) -> dict[StrategyKey, set[Period]]:
    """The periods of each (strategy, model version) that hold a touched exit day."""
    wanted: dict[StrategyKey, set[Period]] = defaultdict(set)
    for strategy_id, model_version, utc_day in touched:
        for day in local_days(utc_day, time_zone):
            for period_type in PERIOD_TYPES:
                start = period_start(day, period_type)
                if start >= horizon:  # older periods' trades are (partly) expired: keep them
                    wanted[(strategy_id, model_version)].add((period_type, start))
    return wanted


def _wanted_model_days(touched: set[tuple[str, date]], time_zone: str,
                       horizon: date) -> dict[str, set[date]]:
    """The local days of each model version that hold a touched UTC day."""
    wanted: dict[str, set[date]] = defaultdict(set)
    for model_version, utc_day in touched:
        for day in local_days(utc_day, time_zone):
            if day >= horizon:
                wanted[model_version].add(day)
    return wanted


async def _keep_trade_days(conn: Conn, reader: Conn, options: RollupSettings,
                           strategy_periods: dict[StrategyKey, set[Period]],
                           model_days: dict[str, set[date]]) -> None:
    """rollup_trade_days, this run's table on the primary: the trade_days rows of every wanted
    period and model day, from one pass over the trades.

    Without a replica the primary groups them into the table itself, by CREATE TABLE AS: it
    keeps the parallel workers a SELECT has on plain PostgreSQL (INSERT ... SELECT has none:
    1.16 s a year instead of 0.75 s), and spares the replica's way, the rows sent here and
    copied back (0.22 s a year). Further stretches of time, a month or more apart, are
    inserted.

    A model day needs every strategy's trades of its version, so the days are read per model
    version, for all its strategies: rows of strategies that were not touched are left unused
    (reading them costs less than a second pass over the same days would).
    """
    sql = queries("rollup")
    spans: dict[str, list[tuple[date, date]]] = defaultdict(list)
    for (_, model_version), periods in strategy_periods.items():
        spans[model_version] += [(start, period_end(start, period_type))
                                 for period_type, start in periods]
    for model_version, days in model_days.items():
        spans[model_version] += [(day, day + timedelta(days=1)) for day in days]
    ranges = [(model_version, first, end) for model_version, version_spans in spans.items()
              for first, end in merge_ranges(version_spans)]  # merged: no trade read twice
    # One scan per stretch of time, the days between ranges read too unless a month apart
    scans = [(*_columns([r for r in ranges if first <= r[1] and r[2] <= end], 3),
              options.time_zone, first, end)
             for first, end in merge_ranges(((r[1], r[2]) for r in ranges), gap=TRADE_SCAN_GAP)]
    if reader is conn and scans:
        await conn.execute(f"CREATE TEMP TABLE rollup_trade_days ON COMMIT DROP AS\n"
                           f"{sql['trade_days']}", *scans[0])
        for args in scans[1:]:
            await conn.execute(f"INSERT INTO rollup_trade_days\n{sql['trade_days']}", *args)
        return
    await conn.execute(sql["trade_days_table"])
    grouping = await reader.prepare(sql["trade_days"])
    for args in scans:
        rows = await grouping.fetch(*args)
        await conn.copy_records_to_table("rollup_trade_days",
                                         records=[tuple(row) for row in rows])


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as one list per column (for unnest), also when there are no rows."""
    return [[row[i] for row in rows] for i in range(width)]


# --- strategy_performance --------------------------------------------------------------------


def _strategy_periods_args(options: RollupSettings,
                           wanted: dict[StrategyKey, set[Period]]) -> list[object]:
    """strategy_periods' parameters: the wanted periods, and the ratio settings."""
    periods = [(*key, *period) for key, key_periods in wanted.items()
               for period in sorted(key_periods)]
    ratios = options.ratios
    return [*_columns(periods, 4), ratios.capital_base, ratios.periods_per_year,
            float(ratios.risk_free_rate) / ratios.periods_per_year]


def _numerics_as_text(columns: list[list[object]]) -> list[list[object]]:
    """Decimals as text: the server parses numeric text faster than asyncpg encodes them."""
    return [[str(value) if isinstance(value, Decimal) else value for value in column]
            for column in columns]


# --- model_performance -----------------------------------------------------------------------


def _recounted_quarters(
    marks: Iterable[tuple[str, date, datetime | None]],
) -> list[tuple[str, datetime, datetime]]:
    """The prediction marks' quarter hours, or whole UTC days where a mark names no quarter
    hour, as (model version, first instant, end instant) ranges merged per version."""
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for version, utc_day, quarter in marks:
        if quarter is None:
            first = datetime(utc_day.year, utc_day.month, utc_day.day, tzinfo=UTC)
            spans[version].append((first, first + timedelta(days=1)))
        else:
            spans[version].append((quarter, quarter + QUARTER))
    return [(version, first, end) for version, version_spans in spans.items()
            for first, end in merge_ranges(version_spans)]


async def _tallies_kept_from(conn: Conn, options: RollupSettings, horizon: date, *,
                             start_over: bool) -> date:
    """The first local day whose tallies are kept (schema/29): the KEPT_DAYS up to today,
    none before the predictions' horizon. The kept tallies start over (this run counts them)
    in a new time zone, when they would have to keep days they dropped, or if asked."""
    sql = queries("rollup")
    kept = await conn.fetchrow(sql["tallies_kept"], options.time_zone)
    assert kept is not None  # one row, always
    kept_from: date = max(kept["today"] - timedelta(days=KEPT_DAYS - 1), horizon)
    if (start_over or kept["time_zone"] != options.time_zone
            or kept_from < kept["kept_from"]):
        log.info("rollup.tallies_start_over", time_zone=options.time_zone, kept_from=kept_from)
        await conn.execute(sql["start_tallies_over"], options.time_zone, kept_from)
        await conn.execute(sql["fill_model_day_calls"], options.time_zone)
    elif kept_from > kept["kept_from"]:
        await conn.execute(sql["keep_tallies_from"], kept_from, options.time_zone)
    return kept_from


async def _recount_whole_days(reader: Conn, options: RollupSettings, horizon: date,
                              days: dict[str, set[date]]) -> list[asyncpg.Record]:
    """prediction_tallies' rows of whole local days, per day (days older than the kept ones)."""
    zone = ZoneInfo(options.time_zone)
    ranges = [(version, _midnight(first, zone), _midnight(end, zone))
              for version, version_days in days.items()
              for first, end in merge_ranges((day, day + timedelta(days=1))
                                             for day in version_days)]
    if not ranges:
        return []
    return await reader.fetch(queries("rollup")["prediction_tallies"], *_columns(ranges, 3),
                              options.regime_bar_max_age, options.time_zone, horizon, False)


async def _kept_tallies(conn: Conn, reader: Conn, options: RollupSettings, kept_from: date,
                        since: datetime, model_days: dict[str, set[date]],
                        quarters: list[tuple[str, datetime, datetime]]) -> list[asyncpg.Record]:
    """The kept tallies (schema/29) of the wanted model days from ``kept_from`` on (whose
    quarter hours begin at ``since``), after the marked quarter hours are recounted."""
    sql = queries("rollup")
    quarters = [(version, max(first, since), end) for version, first, end in quarters
                if end > since]  # older days are recounted whole (_recount_whole_days)
    if quarters:
        await conn.execute(sql["quarter_tallies_table"])
        recount = sql["prediction_tallies"]
        args = (*_columns(quarters, 3), options.regime_bar_max_age, options.time_zone,
                kept_from, True)
        with _phase("prediction_tallies"):
            if reader is conn:  # a busy day's quarter hours are thousands of rows: not here
                await conn.execute(f"INSERT INTO rollup_quarter_tallies\n{recount}", *args)
            else:
                await _copy_in_chunks(reader, recount, args, conn, "rollup_quarter_tallies")
        with _phase("keep_prediction_tallies"):
            await conn.execute(sql["keep_prediction_tallies"], *_columns(quarters, 3))
        below_zero = [row for row in await conn.fetch(sql["drop_spent_day_tallies"])
                      if row["calls"] < 0]
        if below_zero:
            raise RollupError(
                f"the kept prediction tallies disagree: {len(below_zero)} day counts below "
                f"zero (first: {dict(below_zero[0])}); `cie rollup --full` counts them again")
    wanted = [(version, day) for version, days in model_days.items() for day in days
              if day >= kept_from]
    return await conn.fetch(sql["day_tallies"], *_columns(wanted, 2)) if wanted else []


LIVE_UPSERT_COLUMNS = 17  # upsert_live_model_days' parameters


def _tallies(rows: list[asyncpg.Record]) -> dict[tuple[str, date], PredictionTally]:
    """prediction_tallies' rows as one tally per (model version, local day)."""
    tallies: dict[tuple[str, date], PredictionTally] = defaultdict(PredictionTally)
    for row in rows:
        tally = tallies[(row["model_version"], row["day"])]
        calls, right = row["calls"], row["calls"] if row["right"] else 0
        if row["tally"] == 1:
            tally.count_directions(row["predicted_direction"], row["actual_direction"], calls)
        elif row["tally"] == 2 and row["confidence_score"] is not None:
            tally.count_confidence(row["confidence_score"], calls, right)
        elif row["tally"] == 3 and row["detected_regime"] is not None:
            tally.count_regime(row["detected_regime"], calls, right)
    return tallies


def _model_figures(tallies: dict[tuple[str, date], PredictionTally],
                   undefined: Counter[tuple[str, str]]) -> dict[tuple[str, date], ModelFigures]:
    """The figures of every (model version, local day) that has validated predictions."""
    figures: dict[tuple[str, date], ModelFigures] = {}
    for model_day, tally in tallies.items():
        if tally.samples:
            notes = Undefined()
            figures[model_day] = model_figures(tally, notes)
            undefined.update(notes.reasons)
    return figures


def _model_rows(
    wanted: dict[str, set[date]], figures: dict[tuple[str, date], ModelFigures],
    pnl: dict[tuple[str, date], Decimal], identity: dict[str, tuple[str, str]],
    undefined: Counter[tuple[str, str]],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The wanted live model days' upsert rows and the emptied days' keys."""
    upserts: list[tuple[object, ...]] = []
    deletes: list[tuple[object, ...]] = []
    for version, days in wanted.items():
        for day in sorted(days):
            day_figures, day_pnl = figures.get((version, day)), pnl.get((version, day))
            if day_figures is None and day_pnl is None:
                deletes.append((version, day))
                continue
            notes = Undefined()
            if day_figures is None:  # trades but no validated prediction that day
                day_figures = model_figures(PredictionTally(), notes)
            contribution = money(day_pnl if day_pnl is not None else Decimal(0),
                                 "live_pnl_contribution", notes)
            undefined.update(notes.reasons)
            model_type, status = identity[version]
            upserts.append((
                version, model_type, day, status, day_figures.samples, day_figures.accuracy,
                day_figures.precision, day_figures.recall, day_figures.f1_score,
                day_figures.auc_roc, day_figures.brier_score,
                day_figures.expected_calibration_error,
                *(day_figures.regime_accuracy[regime] for regime in REGIMES), contribution))
    return upserts, deletes


def _day_calls(wanted: dict[str, set[date]],
               tallies: dict[tuple[str, date], PredictionTally]) -> list[tuple[object, ...]]:
    """(model version, day, calls, right calls) of each wanted model day (0 calls: none)."""
    calls: list[tuple[object, ...]] = []
    for version, days in wanted.items():
        for day in days:
            tally = tallies.get((version, day), PredictionTally())
            calls.append((version, day, tally.samples, tally.right))
    return calls


async def _offline_live_columns(conn: Conn, options: RollupSettings, versions: list[str],
                                undefined: Counter[tuple[str, str]]) -> int:
    """live_accuracy and live_pnl_contribution of offline evaluations: since their date (read
    on the primary: the model days' calls this run keeps are part of it)."""
    sql = queries("rollup")
    changed = []
    for row in await conn.fetch(sql["offline_live_figures"], versions, options.time_zone):
        notes = Undefined()
        calls = row["calls"]
        accuracy = ratio(Decimal(row["right_calls"]) / calls if calls else None, 5, 4,
                         "live_accuracy", notes, why="no validated prediction since evaluation")
        pnl = money(row["net_pnl"] if row["net_pnl"] is not None else Decimal(0),
                    "live_pnl_contribution", notes)
        undefined.update(notes.reasons)
        if (accuracy, pnl) != (row["live_accuracy"], row["live_pnl_contribution"]):
            changed.append((row["id"], accuracy, pnl))
    if changed:
        await conn.executemany(sql["set_offline_live_figures"], changed)
    return len(changed)


# --- helpers ---------------------------------------------------------------------------------


COPY_CHUNK_ROWS = 10_000


async def _copy_in_chunks(reader: Conn, query: str, args: Sequence[object], conn: Conn,
                          table: str) -> None:
    """``query``'s rows on ``reader`` copied into ``table`` on ``conn``, at most
    COPY_CHUNK_ROWS of them in this process at a time."""
    rows: list[tuple[object, ...]] = []
    async with reader.transaction(isolation="repeatable_read", readonly=True):
        async for row in reader.cursor(query, *args, prefetch=COPY_CHUNK_ROWS):
            rows.append(tuple(row))
            if len(rows) == COPY_CHUNK_ROWS:
                await conn.copy_records_to_table(table, records=rows)
                rows = []
    await conn.copy_records_to_table(table, records=rows)


@contextlib.asynccontextmanager
async def _meanwhile(work: Coroutine[object, object, T]) -> AsyncIterator[asyncio.Task[T]]:
    """``work`` (statements on a connection) runs while the block computes here, and is
    awaited after it (its result is the task's). Its connection takes no other query until
    then."""
    task = asyncio.create_task(work)
    await asyncio.sleep(0)  # the task's first step sends its first statement
    try:
        yield task
    except BaseException:
        task.cancel()  # frees the connection for the rollback
        with contextlib.suppress(BaseException):
            await task
        raise
    await task


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    log.debug("rollup.phase", phase=name, seconds=round(time.perf_counter() - started, 3))


def local_days(utc_day: date, time_zone: str) -> list[date]:
    """The local days (in ``time_zone``) that overlap the UTC day ``utc_day``."""
    if time_zone == "UTC":
        return [utc_day]
    zone = ZoneInfo(time_zone)
    start = datetime(utc_day.year, utc_day.month, utc_day.day, tzinfo=UTC)
    first = start.astimezone(zone).date()
    last = (start + timedelta(days=1) - timedelta(microseconds=1)).astimezone(zone).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant local ``day`` begins (where midnight is skipped, the instant of the
    jump; where it repeats, the first)."""
    return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)


def _quarter_of(instant: datetime) -> datetime:
    """The quarter hour ``instant`` is in, as schema/29 bins them (from 2000-01-01 UTC, a
    whole number of quarter hours after the epoch)."""
    seconds = int(instant.timestamp())
    return datetime.fromtimestamp(seconds - seconds % int(QUARTER.total_seconds()), UTC)


def merge_ranges(ranges: Iterable[tuple[Day, Day]],
                 gap: timedelta = timedelta(0)) -> list[tuple[Day, Day]]:
    """Half-open ranges (of days or instants) merged where they overlap, touch or lie at most
    ``gap`` apart."""
    merged: list[tuple[Day, Day]] = []
    for first, end in sorted(ranges):
        if merged and first <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged


async def _horizons(conn: Conn, time_zone: str) -> dict[str, date]:
    """Per fact table, the first local day whose facts are all still retained."""
    first = {row["table_name"]: row["first_day"]
             for row in await conn.fetch(queries("rollup")["horizons"], time_zone)}
    return {table: first.get(table, date.min) for table in ("trade_outcomes", "model_predictions")}


async def _wait_for_replica(replica: Conn, position: str, seconds: float) -> None:
    """Wait until the replica has replayed the primary's WAL up to ``position``."""
    sql = queries("rollup")
    deadline = time.monotonic() + seconds
    while not await replica.fetchval(sql["replica_caught_up"], position):
        if time.monotonic() > deadline:
            raise RollupError(f"the read replica has not replayed WAL {position} within "
                              f"{seconds:g} s (CIE_ROLLUP_REPLICA_WAIT_SECONDS)")
        await asyncio.sleep(0.1)
