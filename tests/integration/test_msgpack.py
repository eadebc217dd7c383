"""MessagePack on the wire: producers may send any topic's events as MessagePack, declared by
the message's own content-type header, mixed with JSON in one partition, and every row lands
as the same values in JSON land it (issue #44)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from consumers import topics
from consumers.demo import session
from consumers.ingest.kafka import DLQ_ERROR_CLASS, DLQ_REASON
from consumers.producer import MSGPACK_HEADERS, pack
from tests.support.chaos import snapshot
from tests.support.harness import Headers, Ingest, ingest_environment
from tests.support.stack import Stack, Templates, clone, database_url, drop_database

Message = tuple[str, bytes, bytes, Headers]


@pytest.fixture
async def json_twin(stack: Stack, templates: Templates, any_db: str) -> AsyncIterator[str]:
    """A second fresh database on ``any_db``'s schema path."""
    conn = await asyncpg.connect(any_db)
    try:
        timescale = await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    template = templates.timescale if timescale else templates.plain
    assert template is not None
    name = await clone(stack, template)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


async def ingest_all(stack: Stack, database: str, messages: list[Message],
                     poison: Sequence[bytes] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Send ``messages`` (their topics' short names) and ``poison`` (to bars) through a real
    consumer into ``database``; wait until every one is committed. Returns the sent counts
    and the dead letters (class, reason)."""
    ingest = Ingest(ingest_environment(stack.kafka, database))
    await ingest.open()
    try:
        await ingest.start()
        await ingest.send_each([(ingest.topic(name), key, value, headers)
                                for name, key, value, headers in messages])
        await ingest.send_raw("bars", poison, key=b"POISON", headers=MSGPACK_HEADERS)
        sent = {name: sum(1 for m in messages if m[0] == name) for name in ingest.table}
        sent["bars"] += len(poison)
        for name, count in sent.items():
            await ingest.drained(name, count, timeout=60)
        letters = [(dict(r.headers)[DLQ_ERROR_CLASS].decode(),
                    dict(r.headers)[DLQ_REASON].decode())
                   for name in ingest.table for r in await ingest.all_dead_letters(name)]
        return sent, letters
    finally:
        await ingest.close()


async def test_every_topic_in_messagepack_lands_as_the_same_values_in_json(
        stack: Stack, any_db: str, json_twin: str) -> None:
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
    bar = msgspec.msgpack.decode(next(m[2] for m in mixed if m[0] == "bars" and m[3]))
    poison = [msgspec.msgpack.encode(bar)[:-2],
              msgspec.msgpack.encode({**bar, "volume": msgspec.msgpack.Ext(3, b"?")})]

    sent, letters = await ingest_all(stack, any_db, mixed, poison)
    packed_per_topic = {name: sum(1 for m in mixed if m[0] == name and m[3]) for name in sent}
    assert all(packed_per_topic.values()), packed_per_topic
    assert letters == [("DecodeError", "Input data was truncated"),
                       ("ValidationError", "Expected `int`, got `ext` - at `$.volume`")]
    _, none = await ingest_all(stack, json_twin, as_json)
    assert none == []
    from_msgpack, from_json = await snapshot(any_db), await snapshot(json_twin)
    for table, rows in from_json.items():
        assert from_msgpack[table] == rows, table
    assert sum(len(rows) for rows in from_json.values()) >= len(events) // 2
