"""bars → market_conditions. A bar re-sent for the same (symbol, timestamp) is a correction and
replaces the stored one (last write wins, in Kafka order)."""

from __future__ import annotations

from typing import Any

import msgspec

from consumers.contracts.bars import Bar
from consumers.ingest.pipelines.base import CopyUpsertPipeline


class BarsPipeline(CopyUpsertPipeline):
    name = "bars"
    event_type = Bar
    time_fields = ("timestamp",)
    stage = "stage_market_conditions"
    target = "market_conditions"
    key = ("symbol", "timestamp")
    columns = tuple(Bar.__struct_fields__)

    def to_row(self, event: Any) -> tuple[Any, ...]:
        return msgspec.structs.astuple(event)
