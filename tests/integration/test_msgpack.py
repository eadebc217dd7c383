"""MessagePack on the wire: producers may send any topic's events as MessagePack, declared by
the message's own content-type header, mixed with JSON in one partition, and every row lands
as the same values in JSON land it (issue #44)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec

from consumers import topics
from consumers.demo import session
from consumers.producer import MSGPACK_HEADERS, pack
from tests.support.chaos import snapshot
from tests.support.harness import Headers, Ingest, Sender, ingest_all
from tests.support.stack import Stack

Message = tuple[str, bytes, bytes, Headers]  # topic's short name, key, value, headers


def sender(messages: list[Message], poison: list[bytes] | None = None) -> Sender:
    async def send(ingest: Ingest) -> dict[str, int]:
        await ingest.send_each([(ingest.topic(name), key, value, headers)
                                for name, key, value, headers in messages])
        sent = {name: sum(1 for m in messages if m[0] == name) for name in ingest.table}
        if poison:
            await ingest.send_raw("bars", poison, key=b"POISON", headers=MSGPACK_HEADERS)
            sent["bars"] += len(poison)
        return sent
    return send


async def test_every_topic_in_messagepack_lands_as_the_same_values_in_json(
        stack: Stack, any_db: str, twin_db: str) -> None:
    start = (datetime.now(UTC) - timedelta(days=1, minutes=30)).replace(second=0, microsecond=0)
    events = session(random.Random(11), start=start, minutes=30, symbols=["AAPL", "BRK.B", "X"])
    mixed: list[Message] = []
    as_json: list[Message] = []
    for number, event in enumerate(events):
        topic = topics.of_event(event)
        key = topic.key(event)
        packed = pack(event)
        same_in_json = msgspec.json.encode(msgspec.msgpack.decode(packed))
        # every third event in JSON: the encoding is each message's own, in any mix
        mixed.append((topic.name, key, packed, MSGPACK_HEADERS) if number % 3
                     else (topic.name, key, same_in_json, ()))
        as_json.append((topic.name, key, same_in_json, ()))
    packed_per_topic = {name: sum(1 for m in mixed if m[0] == name and m[3])
                        for name in topics.BY_NAME}
    assert all(packed_per_topic.values()), packed_per_topic
    bar = msgspec.msgpack.decode(next(m[2] for m in mixed if m[0] == "bars" and m[3]))
    poison = [msgspec.msgpack.encode(bar)[:-2],
              msgspec.msgpack.encode({**bar, "volume": msgspec.msgpack.Ext(3, b"?")})]

    letters = await ingest_all(stack.kafka, any_db, sender(mixed, poison))
    assert letters == [("DecodeError", "Input data was truncated"),
                       ("ValidationError", "Expected `int`, got `ext` - at `$.volume`")]
    assert await ingest_all(stack.kafka, twin_db, sender(as_json)) == []
    from_msgpack, from_json = await snapshot(any_db), await snapshot(twin_db)
    for table, rows in from_json.items():
        assert from_msgpack[table] == rows, table
    assert sum(len(rows) for rows in from_json.values()) >= len(events) // 2
