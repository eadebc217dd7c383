"""The fills topic's message: one execution. A trade is the set of fills sharing a trade_id."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal
from uuid import UUID

from consumers.contracts.base import (
    NON_NEGATIVE,
    POSITIVE,
    Bound,
    Contract,
    ModelVersion,
    PositiveInt,
    StrategyId,
    Symbol,
    UtcTime,
)

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
    bounds: ClassVar[dict[str, Bound]] = {
        "price": POSITIVE, "intended_price": POSITIVE, "commission": NON_NEGATIVE,
    }
    rules: ClassVar[tuple[str, ...]] = (
        "order_submitted_at after filled_at by more than CIE_CLOCK_SKEW_TOLERANCE_MS "
        "(within it, taken as submitted at the fill)",
        "filled_at more than CIE_FUTURE_TOLERANCE_SECONDS ahead of the consumer's clock",
        "a fill that would flip the trade's position, comes after its close, or disagrees "
        "with its trade's strategy, model or symbol, or a fill_id already used by another "
        "trade",
    )
