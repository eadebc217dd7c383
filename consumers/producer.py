"""A typed producer for the contracts: the right topic, the entity as key, exact values.

Keys keep each entity's events in one partition, in order: bars by symbol, predictions by
prediction_id, fills by trade_id, improvement events by the test or task they are about (or
their own event_id). Decimals are written as JSON numbers with their exact digits (free-form
JSON such as metrics and feature vectors stays numeric); the consumers read numbers and
decimal strings alike into Decimal without a float in between. In MessagePack (the
``content-type: application/msgpack`` header says so) the contract's decimals are strings
(exact) and times are MessagePack timestamps; numbers in free-form fields are float64, as
a model's features are, since MessagePack has no decimal number.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from consumers import topics
from consumers.contracts.bars import Bar
from consumers.contracts.encoding import CONTENT_TYPE, MSGPACK, Encoding
from consumers.contracts.fills import Fill
from consumers.contracts.free_form import free_form_fields
from consumers.contracts.improvements import Event, ImprovementEvent
from consumers.contracts.predictions import Prediction
from consumers.platform.settings import Settings

_encoder = msgspec.json.Encoder(decimal_format="number")  # datetime -> RFC 3339, UUID -> str

Contract = Bar | Prediction | Fill | Event


_packer = msgspec.msgpack.Encoder()  # Decimal -> str, datetime -> timestamp, UUID -> str
_FREE_FORM = {cls: names for contract in (Bar, Prediction, Fill, ImprovementEvent)
              for cls, names in free_form_fields(contract).items() if names}


def encode(event: Contract) -> bytes:
    return _encoder.encode(event)


def pack(event: Contract) -> bytes:
    """``event`` in MessagePack, to send with ``MSGPACK_HEADERS``."""
    if names := _FREE_FORM.get(type(event)):
        event = msgspec.structs.replace(
            event, **{name: as_floats(getattr(event, name)) for name in names})
    return _packer.encode(event)


def as_floats(value: Any) -> Any:
    """``value`` (a free-form field's) with its Decimals as floats, numbers as a MessagePack
    or Protobuf producer's features are."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_floats(item) for item in value]
    return value


MSGPACK_HEADERS = [(CONTENT_TYPE, MSGPACK.encode())]


def route(settings: Settings, event: Contract) -> tuple[str, bytes]:
    """(topic, key) for an event."""
    topic = topics.of_event(event)
    return topic.kafka_name(settings), topic.key(event)


class EventProducer:
    def __init__(self, producer: AIOKafkaProducer, settings: Settings,
                 encoding: Encoding = Encoding.JSON) -> None:
        self._producer = producer
        self._settings = settings
        self._packed = encoding is Encoding.MSGPACK

    async def send(self, event: Contract) -> asyncio.Future[Any]:
        """Queue one event; await the returned future for the broker's acknowledgement."""
        topic, key = route(self._settings, event)
        if self._packed:
            future: asyncio.Future[Any] = await self._producer.send(
                topic, key=key, value=pack(event), headers=MSGPACK_HEADERS)
        else:
            future = await self._producer.send(topic, key=key, value=encode(event))
        return future

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        """For the demo's deliberately malformed messages."""
        future: asyncio.Future[Any] = await self._producer.send(topic, key=key, value=value)
        return future
