"""fills → trade_fills (every execution) and trade_outcomes (derived from each trade's ledger).

Per batch, in one transaction:
1. lock the batch's trades (advisory locks, sorted: no deadlock between consumers) so two
   consumers never derive one trade from different views of its ledger;
2. read those trades' stored fills; check each new fill, in Kafka order, against the ledger
   so far: a redelivered fill (same fill_id, same trade) is a no-op; a fill that would flip
   the position, come after the close, disagree on the trade's strategy, model or symbol, or
   reuse a fill_id the batch already gave another trade is refused;
3. copy the accepted fills into trade_fills, and the Kafka record each came from (topic,
   partition, offset, the producer's `source` and `traceparent` headers) into
   trade_fill_sources (lineage: `cie trace`), and re-derive every touched trade from its whole
   ledger (consumers/ingest/trades.py). If a late fill moved a trade's entry_time (part of
   the key, for TimescaleDB), the row under the old key is deleted first. The rollup is told
   what changed with one mark per (strategy, model version, exit day), old days and new,
   not by its per-row triggers (schema/18-trade-rollup-marks-by-writer.sql).

The first attempt (``write_new``) copies the accepted fills and the rows of trades with no
stored fills without savepoints. Their keys are new to their own ledgers, so that only fails
if a fill's key (fill_id, filled_at) is stored under another trade, or a trade row exists
without fills (imported history), or a fill's source is stored without its fill (its month
archived and removed, then the fill sent again). Then ``write`` goes again with a savepoint
around each copy: such fills are refused too and the rest decided again; such trade rows and
sources are upserted.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import msgspec

from consumers.contracts.fills import Fill
from consumers.errors import ImplausibleTime, LedgerError
from consumers.ingest import trades
from consumers.ingest.pipelines.base import Pipeline, Rejection
from consumers.ingest.pipelines.text import row_text
from consumers.platform.db import (
    Conn,
    copy_field,
    copy_lines,
    copy_new_lines,
    copy_rows,
    queries,
)

FILL_COLUMNS = tuple(Fill.__struct_fields__)
OUTCOME_COLUMNS = trades.TradeOutcome.__struct_fields__
SOURCE_COLUMNS = ("fill_id", "filled_at", "topic", "kafka_partition", "kafka_offset",
                  "producer", "traceparent")
# Headers kept as a fill's lineage: the producer's name for itself, and its W3C trace context.
PRODUCER_HEADERS = ("source", "ce_source")
TRACEPARENT_HEADER = "traceparent"
HEADER_CHARS_KEPT = 256  # a producer's header is its own to fill: kept, cut to this
_FILLED_AT = FILL_COLUMNS.index("filled_at")
# rows as copy_line writes them
_fill_text = row_text(Fill, FILL_COLUMNS)
_outcome_text = row_text(trades.TradeOutcome, OUTCOME_COLUMNS)


class SourcedFill(msgspec.Struct, frozen=True, gc=False):
    """A fill as ``write`` gets it: decoded, its row and its source's row as COPY text (None:
    not read from Kafka, no lineage to store). Like ``Encoded``, a Struct without GC
    tracking: a third of a NamedTuple's time to build, and it refers to nothing that refers
    back to it."""

    event: Fill
    line: str
    source: str | None = None


class FillsPipeline(Pipeline):
    name = "fills"
    event_type = Fill
    time_fields = ("filled_at", "order_submitted_at")

    def staging_ddl(self) -> Sequence[str]:
        sql = queries("ingest")
        return (sql["trade_outcomes_stage"], sql["fill_sources_stage"])

    def check_times(self, event: Any, now: datetime) -> Any:
        """An order submitted after its fill by at most the clock skew is taken as submitted
        at the fill (latency 0): two hosts' clocks, not a fact. Beyond it, refused."""
        fill: Fill = super().check_times(event, now)
        submitted = fill.order_submitted_at
        if submitted is None or submitted <= fill.filled_at:
            return fill
        if submitted - fill.filled_at > self.times.skew:
            raise ImplausibleTime(
                f"order_submitted_at: {(submitted - fill.filled_at).total_seconds():g} s after "
                f"filled_at; clocks may disagree by {self.times.skew.total_seconds():g} s")
        return msgspec.structs.replace(fill, order_submitted_at=fill.filled_at)

    def ready(self, event: Any) -> SourcedFill:
        return SourcedFill(event, f"{_fill_text(event)}\n")

    def with_source(self, ready: Any, record: Any) -> SourcedFill:
        sourced: SourcedFill = ready
        # the fill's key as its own row already has it in COPY text; one pass over the headers
        fields = sourced.line.split("\t", _FILLED_AT + 1)
        producer = traceparent = None
        for key, value in record.headers or ():
            if key == TRACEPARENT_HEADER:
                traceparent = traceparent or _header_text(value)
            elif key in PRODUCER_HEADERS:
                producer = producer or _header_text(value)
        return SourcedFill(sourced.event, sourced.line, (
            f"{fields[0]}\t{fields[_FILLED_AT]}\t{copy_field(record.topic)}\t"
            f"{record.partition}\t{record.offset}\t{copy_field(producer)}\t"
            f"{copy_field(traceparent)}\n"))

    def held_bytes(self, ready: Any) -> int:
        return sys.getsizeof(ready.line) + sys.getsizeof(ready.source)

    async def write_new(self, conn: Conn, events: Sequence[Any]) -> list[Rejection] | None:
        # a unique violation rolls all of it back, and ``write`` goes again carefully
        return await _write(conn, events, careful=False)

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        return await _write(conn, events, careful=True)


def _header_text(value: bytes | None) -> str | None:
    """A header's value as text (NULs dropped: PostgreSQL text cannot hold them), cut to
    HEADER_CHARS_KEPT."""
    if value is None:
        return None
    return value[:HEADER_CHARS_KEPT * 4].decode(errors="replace").replace(
        "\x00", "")[:HEADER_CHARS_KEPT]


async def _write(conn: Conn, events: Sequence[Any], *, careful: bool) -> list[Rejection]:
    sql = queries("ingest")
    encoded: Sequence[SourcedFill] = events
    fills: list[Fill] = [e.event for e in encoded]
    trade_ids = sorted({f.trade_id for f in fills})
    await conn.execute(sql["fills_lock_trades"], trade_ids)
    ledgers: dict[UUID, list[trades.FillLike]] = {trade_id: [] for trade_id in trade_ids}
    for row in await conn.fetch(sql["fills_ledgers"], trade_ids):
        stored = trades.StoredFill(*row)
        ledgers[stored.trade_id].append(stored)
    # Fills and their trade's row are written together, so a trade without stored fills
    # has (nearly always) no trade_outcomes row either.
    stored_trades = {trade_id for trade_id, ledger in ledgers.items() if ledger}

    accepted, outcomes, rejections = _accept(fills, ledgers)
    lines = [encoded[index].line for index in accepted]
    if lines and not careful:
        await copy_lines(conn, "trade_fills", FILL_COLUMNS, lines)
    elif lines and not await copy_new_lines(conn, "trade_fills", FILL_COLUMNS, lines):
        # A fill's key is stored under another trade: refuse it and decide again.
        taken = {row["fill_id"]: row["trade_id"] for row in await conn.fetch(
            sql["fills_owners"], [fills[i].fill_id for i in accepted],
            [fills[i].filled_at for i in accepted])}
        accepted, outcomes, rejections = _accept(fills, ledgers, taken)
        # a fill stored elsewhere since the read (another consumer) fails this COPY: the
        # batch is then split and that fill dead-lettered with the unique violation
        await copy_lines(conn, "trade_fills", FILL_COLUMNS,
                         [encoded[index].line for index in accepted])
    sources = [source for index in accepted if (source := encoded[index].source)]
    if sources and not careful:  # keyed like its fill, which is new here
        await copy_lines(conn, "trade_fill_sources", SOURCE_COLUMNS, sources)
    elif sources:
        await copy_lines(conn, "stage_trade_fill_sources", SOURCE_COLUMNS, sources)
        await conn.execute(sql["fill_sources_upsert"])
    if accepted:
        await _store_outcomes(
            conn, careful=careful,
            new=[o for o in outcomes if o.trade_id not in stored_trades],
            changed=[o for o in outcomes if o.trade_id in stored_trades])
    return rejections


async def _store_outcomes(
    conn: Conn, *, careful: bool,
    new: list[trades.TradeOutcome], changed: list[trades.TradeOutcome],
) -> None:
    """New trades are copied straight into trade_outcomes (careful: in a savepoint, and if a
    row is there after all, they join the others); trades already stored go through staging,
    re-keying and the upsert (which keeps the validator's excursions)."""
    sql = queries("ingest")
    new_lines = [f"{_outcome_text(outcome)}\n" for outcome in new]
    if new and not careful:
        await copy_lines(conn, "trade_outcomes", OUTCOME_COLUMNS, new_lines)
    elif new and not await copy_new_lines(conn, "trade_outcomes", OUTCOME_COLUMNS, new_lines):
        changed = changed + new
    strategies, versions, days = _closed_days([*new, *changed])
    if changed or days:
        # before the upsert, so that the days the stored rows leave are marked too
        await conn.execute(sql["trade_outcomes_mark_rollup"], [o.trade_id for o in changed],
                           strategies, versions, days)
    if changed:
        await copy_rows(conn, "stage_trade_outcomes", OUTCOME_COLUMNS, _rows(changed))
        await conn.execute(sql["trade_outcomes_rekey"])
        await conn.execute(sql["trade_outcomes_upsert"])


def _closed_days(
    outcomes: Sequence[trades.TradeOutcome],
) -> tuple[list[str], list[str], list[date]]:
    """The distinct (strategy, model version, UTC exit day) of the closed trades, as columns."""
    keys = sorted({(o.strategy_id, o.model_version, o.exit_time.astimezone(UTC).date())
                   for o in outcomes if o.exit_time is not None})
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


def _rows(outcomes: Sequence[trades.TradeOutcome]) -> list[tuple[Any, ...]]:
    return list(map(msgspec.structs.astuple, outcomes))


def _accept(
    fills: Sequence[Fill], ledgers: Mapping[UUID, Sequence[trades.FillLike]],
    taken: Mapping[UUID, UUID] | None = None,
) -> tuple[list[int], list[trades.TradeOutcome], list[Rejection]]:
    """Which new fills (indexes into ``fills``) join their trade's stored ledger, the outcome
    of every trade that took a fill (in trade_id order), and the refusals. ``taken`` maps
    fill ids stored under other trades to their trade.

    A fill_id belongs to the first trade it is seen with (stored, then in Kafka order); under
    any other trade it is refused. A trade whose stored ledger plus all of the batch's new
    fills is consistent takes them all, whatever their order in the batch. Otherwise its new
    fills are tried one by one in Kafka order and each one that would make the ledger
    inconsistent is refused.
    """
    owners = {f.fill_id: trade_id for trade_id, ledger in ledgers.items() for f in ledger}
    owners.update(taken or {})
    new: dict[UUID, list[tuple[int, Fill]]] = {}
    rejections: list[Rejection] = []
    for index, fill in enumerate(fills):
        owner = owners.get(fill.fill_id)
        if owner is None:
            owners[fill.fill_id] = fill.trade_id
            new.setdefault(fill.trade_id, []).append((index, fill))
        elif owner != fill.trade_id:
            rejections.append(Rejection(
                index, "DuplicateFillId",
                f"fill {fill.fill_id} is already recorded for trade {owner}, "
                f"not {fill.trade_id}"))
        # else it is already in its trade's ledger (stored, or earlier in the batch)

    accepted: list[int] = []
    outcomes: dict[UUID, trades.TradeOutcome] = {}
    for trade_id, candidates in new.items():
        ledger = list(ledgers[trade_id])
        try:
            outcomes[trade_id] = trades.derive([*ledger, *(fill for _, fill in candidates)])
            accepted.extend(index for index, _ in candidates)
            continue
        except LedgerError:
            pass
        for index, fill in candidates:
            try:
                outcomes[trade_id] = trades.derive([*ledger, fill])
            except LedgerError as exc:
                rejections.append(Rejection(index, "LedgerError", str(exc)))
                continue
            ledger.append(fill)
            accepted.append(index)
    rejections.sort(key=lambda r: r.index)
    return accepted, [outcomes[trade_id] for trade_id in sorted(outcomes)], rejections
