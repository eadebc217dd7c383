"""bars → market_conditions. A bar re-sent for the same (symbol, timestamp) is a correction and
replaces the stored one (last write wins, in Kafka order)."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from consumers.contracts.bars import Bar
from consumers.ingest.pipelines.base import CopyUpsertPipeline
from consumers.ingest.pipelines.text import text_columns


class BarsPipeline(CopyUpsertPipeline):
    name = "bars"
    event_type = Bar
    time_fields = ("timestamp",)
    stage = "stage_market_conditions"
    target = "market_conditions"
    key = ("symbol", "timestamp")
    columns = text_columns(Bar)
    text_path = True  # 17 decimals a bar: checked as text, never built as Decimal

    def to_row(self, event: Any) -> tuple[Any, ...]:
        row: tuple[Any, ...] = _in_column_order(event)
        return row


_in_column_order = attrgetter(*BarsPipeline.columns)
