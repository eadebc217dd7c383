"""A typed producer for the contracts: the right topic, the entity as key, exact JSON.

Keys keep each entity's events in one partition, in order: bars by symbol, predictions by
prediction_id, fills by trade_id, improvement events by the test or task they are about (or
their own event_id). Decimals are written as JSON numbers with their exact digits (free-form
JSON such as metrics and feature vectors stays numeric); the consumers read numbers and
decimal strings alike into Decimal without a float in between.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from consumers import topics
from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.contracts.improvements import Event
from consumers.contracts.predictions import Prediction
from consumers.platform.settings import Settings

_encoder = msgspec.json.Encoder(decimal_format="number")  # datetime -> RFC 3339, UUID -> str

Contract = Bar | Prediction | Fill | Event


def encode(event: Contract) -> bytes:
    return _encoder.encode(event)


def route(settings: Settings, event: Contract) -> tuple[str, bytes]:
    """(topic, key) for an event."""
    topic = topics.of_event(event)
    return topic.kafka_name(settings), topic.key(event)


class EventProducer:
    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self._producer = producer
        self._settings = settings

    async def send(self, event: Contract) -> asyncio.Future[Any]:
        """Queue one event; await the returned future for the broker's acknowledgement."""
        topic, key = route(self._settings, event)
        future: asyncio.Future[Any] = await self._producer.send(
            topic, key=key, value=encode(event))
        return future

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        """For the demo's deliberately malformed messages."""
        future: asyncio.Future[Any] = await self._producer.send(topic, key=key, value=value)
        return future
