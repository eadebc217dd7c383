"""fills → trade_fills (every execution) and trade_outcomes (derived from each trade's ledger).

Per batch, in the caller's transaction:
1. lock the batch's trades (advisory locks, sorted: no deadlock between consumers) so two
   consumers never derive one trade from different views of its ledger;
2. read those trades' stored fills; check each new fill, in Kafka order, against the ledger
   so far: a redelivered fill (same fill_id) is a no-op, a fill that would flip the position,
   come after the close or disagree on the trade's strategy, model or symbol is refused;
3. store the accepted fills and re-derive every touched trade from its whole ledger
   (consumers/trades.py). If a late fill moved a trade's entry_time (part of the key, for
   TimescaleDB), the row under the old key is deleted first.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal
from uuid import UUID

import msgspec

from consumers import trades
from consumers.contract import Contract, ModelVersion, PositiveInt, StrategyId, Symbol, UtcTime
from consumers.db import Conn, copy_line, copy_lines, copy_new_lines, copy_rows, queries
from consumers.pipelines.base import Encoded, Pipeline, Rejection

PRICE = (18, 8)
MONEY = (18, 4)


class Fill(Contract, frozen=True, kw_only=True):
    """One execution. A trade is the set of fills sharing a trade_id."""

    fill_id: UUID
    trade_id: UUID
    strategy_id: StrategyId
    model_version: ModelVersion
    symbol: Symbol
    side: Literal["BUY", "SELL"]
    quantity: PositiveInt
    price: Decimal
    commission: Decimal = Decimal(0)
    intended_price: Decimal | None = None
    filled_at: UtcTime
    order_submitted_at: UtcTime | None = None

    decimals: ClassVar[dict[str, tuple[int, int]]] = {
        "price": PRICE, "commission": MONEY, "intended_price": PRICE,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.price <= 0:
            raise ValueError("price: must be positive")
        if self.commission < 0:
            raise ValueError("commission: must not be negative")
        if self.order_submitted_at is not None and self.order_submitted_at > self.filled_at:
            raise ValueError("order_submitted_at: after filled_at")


FILL_COLUMNS = tuple(Fill.__struct_fields__)
OUTCOME_COLUMNS = (
    "trade_id", "strategy_id", "model_version", "symbol", "direction", "entry_time",
    "exit_time", "entry_price", "exit_price", "quantity", "gross_pnl", "net_pnl", "commission",
    "slippage", "duration_seconds", "outcome_type", "fill_latency_us_sum", "fill_latency_count",
)


class FillsPipeline(Pipeline):
    name = "fills"
    event_type = Fill

    def staging_ddl(self) -> Sequence[str]:
        sql = queries("ingest")
        return (sql["fills_stage"], sql["trade_outcomes_stage"])

    def ready(self, event: Any) -> Encoded:
        return Encoded(event, copy_line(msgspec.structs.astuple(event)))

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        sql = queries("ingest")
        encoded: Sequence[Encoded] = events
        fills: list[Fill] = [e.event for e in encoded]
        trade_ids = sorted({f.trade_id for f in fills})
        await conn.execute(sql["fills_lock_trades"], trade_ids)
        ledgers: dict[UUID, list[Fill]] = {trade_id: [] for trade_id in trade_ids}
        for row in await conn.fetch(sql["fills_ledgers"], trade_ids):
            stored = Fill(**dict(row))
            ledgers[stored.trade_id].append(stored)
        # Fills and their trade's row are written together, so a trade without stored fills
        # has no trade_outcomes row either.
        stored_trades = {trade_id for trade_id, ledger in ledgers.items() if ledger}

        accepted, outcomes, rejections = _accept(fills, ledgers)
        if accepted:
            await _store_fills(conn, [encoded[index] for index in accepted])
            await _store_outcomes(
                conn,
                new=[o for o in outcomes if o.trade_id not in stored_trades],
                changed=[o for o in outcomes if o.trade_id in stored_trades])
        return rejections


async def _store_fills(conn: Conn, accepted: Sequence[Encoded]) -> None:
    """The accepted fills are new to their ledgers (checked under the trades' locks), so they
    are copied straight into trade_fills. Only a key stored under another trade_id (same
    fill_id and filled_at) conflicts: then the staged insert runs, which skips it as before."""
    lines = [e.line for e in accepted]
    if not await copy_new_lines(conn, "trade_fills", FILL_COLUMNS, lines):
        await copy_lines(conn, "stage_trade_fills", FILL_COLUMNS, lines)
        await conn.execute(queries("ingest")["fills_insert"])


async def _store_outcomes(
    conn: Conn, *, new: list[trades.TradeOutcome], changed: list[trades.TradeOutcome]
) -> None:
    """New trades are copied straight into trade_outcomes; trades already stored go through
    staging, re-keying and the upsert (which keeps the validator's excursions)."""
    new_lines = list(map(copy_line, _rows(new)))
    if new and not await copy_new_lines(conn, "trade_outcomes", OUTCOME_COLUMNS, new_lines):
        changed = changed + new
    if changed:
        sql = queries("ingest")
        await copy_rows(conn, "stage_trade_outcomes", OUTCOME_COLUMNS, _rows(changed))
        await conn.execute(sql["trade_outcomes_rekey"])
        await conn.execute(sql["trade_outcomes_upsert"])


def _rows(outcomes: Sequence[trades.TradeOutcome]) -> list[tuple[Any, ...]]:
    return [tuple(getattr(o, c) for c in OUTCOME_COLUMNS) for o in outcomes]


def _accept(
    fills: Sequence[Fill], ledgers: dict[UUID, list[Fill]]
) -> tuple[list[int], list[trades.TradeOutcome], list[Rejection]]:
    """Which new fills (indexes into ``fills``) join their trade's ledger (``ledgers`` is
    extended in place), the outcome of every trade that took a fill (in trade_id order), and
    the refusals.

    A trade whose stored ledger plus all of the batch's new fills is consistent takes them all,
    whatever their order in the batch. Otherwise its new fills are tried one by one in Kafka
    order and each one that would make the ledger inconsistent is refused.
    """
    new: dict[UUID, list[tuple[int, Fill]]] = {}
    known: dict[UUID, set[UUID]] = {}  # fill ids per trade: stored, then the batch's
    for index, fill in enumerate(fills):
        trade_known = known.get(fill.trade_id)
        if trade_known is None:
            trade_known = known[fill.trade_id] = {f.fill_id for f in ledgers[fill.trade_id]}
        if fill.fill_id not in trade_known:  # a redelivered fill is already in the ledger
            trade_known.add(fill.fill_id)
            new.setdefault(fill.trade_id, []).append((index, fill))

    accepted: list[int] = []
    outcomes: dict[UUID, trades.TradeOutcome] = {}
    rejections: list[Rejection] = []
    for trade_id, candidates in new.items():
        ledger = ledgers[trade_id]
        try:
            outcomes[trade_id] = trades.derive([*ledger, *(fill for _, fill in candidates)])
            ledger.extend(fill for _, fill in candidates)
            accepted.extend(index for index, _ in candidates)
            continue
        except trades.LedgerError:
            pass
        for index, fill in candidates:
            try:
                outcomes[trade_id] = trades.derive([*ledger, fill])
            except trades.LedgerError as exc:
                rejections.append(Rejection(index, "LedgerError", str(exc)))
                continue
            ledger.append(fill)
            accepted.append(index)
    rejections.sort(key=lambda r: r.index)
    return accepted, [outcomes[trade_id] for trade_id in sorted(outcomes)], rejections
