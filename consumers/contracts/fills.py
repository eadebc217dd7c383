"""The fills topic's message: one execution. A trade is the set of fills sharing a trade_id."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal
from uuid import UUID

from consumers.contracts.base import (
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.price <= 0:
            raise ValueError("price: must be positive")
        if self.commission < 0:
            raise ValueError("commission: must not be negative")
