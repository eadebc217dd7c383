"""Improvement events a service decides itself (an optimization task disabled, an A/B test
concluded) are recorded in improvement_events by the deciding transaction and published on
improvement-events before it commits, as every other improvement event travels that topic.

A publish that fails rolls the decision back; the next pass decides again and publishes the
same event: its id is derived from what it says (the test and its outcome, the task and its
run), so the ingest consumer, which records every improvement event it reads, finds the row
already there and changes nothing (improvement_insert: ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

import msgspec
from aiokafka import AIOKafkaProducer

from consumers.contracts.improvements import Improvement
from consumers.platform.db import Conn, queries

_encode = msgspec.json.Encoder(decimal_format="number").encode

JSON_COLUMNS = ("old_value", "new_value", "performance_before", "performance_after",
                "improvement_metrics")


class Announcer:
    """Publishes improvement events just recorded on ``topic``, keyed by event id, and waits
    for the broker's acknowledgement of each (inside the caller's transaction)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer, self._topic = producer, topic

    async def __call__(self, conn: Conn, event_ids: Sequence[UUID]) -> None:
        if not event_ids:
            return
        rows = await conn.fetch(queries("announce")["events_by_id"], list(event_ids))
        events = [Improvement(**{name: msgspec.json.decode(value)
                                 if name in JSON_COLUMNS and value is not None else value
                                 for name, value in row.items()})
                  for row in rows]
        sent = [await self._producer.send(self._topic, _encode(event),
                                          key=str(event.event_id).encode())
                for event in events]
        await asyncio.gather(*sent)
