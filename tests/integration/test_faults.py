"""Faults that must not stop ingestion: hostile messages, oversized dead letters, missing
dead-letter topics, batches that outlive their partitions' ownership."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from consumers import topics
from consumers.contracts.bars import Bar
from consumers.ingest.checkpoint import Batch
from consumers.ingest.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_OFFSET,
    DLQ_REASON,
    DLQ_VALUE_TRUNCATED,
    ensure_topics,
    make_consumer,
    require_dead_letter_topics,
)
from consumers.ingest.pipelines.base import Pipeline, staging_tables
from consumers.ingest.runner import Runner
from consumers.platform.db import create_pool
from consumers.platform.settings import load_settings
from tests.support.harness import (
    Ingest,
    consume_subprocess,
    counter,
    eventually,
    ingest_environment,
)
from tests.support.stack import Stack

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)


def bar(symbol: str, minute: int) -> Bar:
    return Bar(symbol=symbol, timestamp=T0 + timedelta(minutes=minute), open=Decimal("10"),
               high=Decimal("11"), low=Decimal("9"), close=Decimal("10.5"), volume=minute)


def bar_json(**changes: object) -> str:
    return json.dumps({"symbol": "EVIL", "timestamp": T0.isoformat(), "open": "10",
                       "high": "11", "low": "9", "close": "10", "volume": 1, **changes})


POISON = {
    # nesting deeper than the decoder's recursion limit, in a field the contract ignores
    "RecursionError": bar_json().replace("}", ', "x": ' + "[" * 1500 + "]" * 1500 + "}").encode(),
    "DecodeError": b'{"symbol": "EVIL", "open": NaN}',
    "ValidationError": bar_json(close="1e999999").encode(),
    "ImplausibleTime": bar_json(timestamp=(datetime.now(UTC) + timedelta(days=2)).isoformat(),
                                ).encode(),
    "EmptyMessage": None,  # a tombstone
}


async def test_hostile_bars_become_dead_letters_and_the_stream_flows(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    await ingest.send([bar("GOOD", m) for m in range(100)])
    # one key, one partition: the poison sits between good bars
    for value in POISON.values():
        await (await ingest.producer.send_raw(ingest.topic("bars"), b"GOOD", value))  # type: ignore[arg-type]
    await ingest.send([bar("GOOD", m) for m in range(100, 200)])
    total = counter(url, "SELECT count(*) FROM market_conditions")
    assert await eventually(total, 200) == 200
    assert await eventually(lambda: ingest.committed("bars"), 205) == 205
    letters = await ingest.all_dead_letters("bars")
    by_class = {dict(r.headers)[DLQ_ERROR_CLASS].decode(): r for r in letters}
    assert sorted(by_class) == sorted(POISON)  # each once, nothing else
    assert len(letters) == len(POISON)
    for error_class, value in POISON.items():
        assert by_class[error_class].value == value  # the original bytes
    assert b"recursion" in dict(by_class["RecursionError"].headers)[DLQ_REASON]
    assert ingest.running


async def test_rows_the_database_refuses_in_free_form_json(ingest: Ingest) -> None:
    """A NUL character passes the contract but not PostgreSQL's text or jsonb input: the
    message is isolated by splitting and dead-lettered; its neighbours land."""
    url = ingest.settings.database_url
    events = [json.dumps({"type": "improvement", "event_id": f"00000000-0000-4000-8000-{i:012d}",
                          "event_type": "retrain", "component_type": "model",
                          "component_id": "m1", "old_value": value}).encode()
              for i, value in enumerate([1, "a\u0000b", 2, {"k": "\u0000"}, 3])]
    await ingest.send_raw("improvements", events, key=b"k")
    total = counter(url, "SELECT count(*) FROM improvement_events")
    assert await eventually(total, 3) == 3
    assert await eventually(lambda: ingest.committed("improvements"), 5) == 5
    letters = await ingest.all_dead_letters("improvements")
    assert sorted(int(dict(r.headers)[DLQ_OFFSET]) for r in letters) == [1, 3]
    assert ingest.running


async def test_a_dead_letter_too_large_for_the_dlq_is_cut_and_says_so(ingest: Ingest) -> None:
    huge = b"{" + b" " * 1_040_000 + b"}"  # fits the source topic, not with the DLQ headers
    await ingest.send_raw("bars", [huge], key=b"BIG")
    await ingest.send([bar("BIG", 1)])
    total = counter(ingest.settings.database_url, "SELECT count(*) FROM market_conditions")
    assert await eventually(total, 1) == 1
    assert await eventually(lambda: ingest.committed("bars"), 2) == 2
    [letter] = await ingest.all_dead_letters("bars")
    headers = dict(letter.headers)
    assert int(headers[DLQ_VALUE_TRUNCATED]) == len(huge)
    assert huge.startswith(letter.value) and len(letter.value) < len(huge)
    assert headers[DLQ_ERROR_CLASS] == b"ValidationError"


async def test_missing_dead_letter_topics_are_created_at_start(stack: Stack, plain_db: str) -> None:
    ingest = Ingest(ingest_environment(stack.kafka, plain_db))
    await ingest.open()
    try:
        dlq = f"{ingest.topic('bars')}.dlq"
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka)
        await admin.start()
        try:
            await admin.delete_topics([dlq])
            async def exists() -> bool:
                return dlq in await admin.list_topics()
            assert await eventually(exists, False) is False
            await require_dead_letter_topics(ingest.settings, [ingest.topic("bars")])
            # bounded: the broker's metadata may show a new topic a moment after its creation
            assert await eventually(exists, True) is True
        finally:
            await admin.close()
    finally:
        await ingest.close()


@dataclass
class BarsRunner:
    """A Runner for the bars topic on a real consumer and pool, driven batch by batch."""

    runner: Runner
    pipeline: Pipeline
    topic: str

    def record(self, offset: int, value: bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(topic=self.topic, partition=partition, offset=offset, timestamp=0,
                              timestamp_type=0, key=None, value=value, checksum=None,
                              serialized_key_size=0, serialized_value_size=len(value),
                              headers=())


@pytest.fixture
async def bars_runner(stack: Stack, plain_db: str) -> AsyncIterator[BarsRunner]:
    settings = load_settings(ingest_environment(stack.kafka, plain_db))
    pipelines = topics.pipelines(settings, ["bars"])
    pool = await create_pool(plain_db, staging_tables(list(pipelines.values())))
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        topic = topics.kafka_topic(settings, "bars")
        yield BarsRunner(Runner(settings, consumer, pool, None, pipelines), pipelines[topic], topic)
    finally:
        await consumer.stop()
        await pool.close()


async def test_a_batch_taken_before_a_revocation_is_not_written_after_it(
    bars_runner: BarsRunner, plain_db: str
) -> None:
    """The loop took a batch, then the partitions were revoked (and may belong to another
    member, which replays them and may write newer corrections): the old batch must not land
    over them."""
    record = bars_runner.record(0, bar_json(symbol="OLD").encode())
    taken = Batch(generation=0)
    taken.add(bars_runner.pipeline, [record])
    await bars_runner.runner.revoke([])  # a revocation happens before the batch's flush runs
    await bars_runner.runner._flush_locked(bars_runner.topic, taken)
    rows = counter(plain_db, "SELECT count(*) FROM market_conditions")
    assert await rows() == 0
    fresh = Batch(generation=1)
    fresh.add(bars_runner.pipeline, [record])
    await bars_runner.runner._flush_locked(bars_runner.topic, fresh)  # read after: it lands
    assert await rows() == 1


async def test_a_backlog_on_48_partitions_drains_in_bounded_memory(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    """Fetched records are bounded in total (CIE_FETCH_MAX_BYTES), not only per partition: a
    member holding many partitions of a backlog must not buffer 4 MiB for each."""
    env = ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="10000",
                             CIE_BATCH_MAX_LATENCY_MS="200")
    ingest = Ingest(env)
    await ensure_topics(ingest.settings, [ingest.topic("bars")], partitions=48,
                        replication_factor=1)
    await ingest.open()
    try:
        padding = "x" * 400  # an ignored field: ~600 bytes a bar, 30 MB in all
        values = [bar_json(symbol=f"M{i % 480:03d}", timestamp=(T0 + timedelta(minutes=i // 480))
                           .isoformat(), note=padding).encode() for i in range(48_000)]
        for start in range(0, len(values), 4800):
            await ingest.send_raw("bars", values[start:start + 4800])
        async with consume_subprocess(env, tmp_path / "consume.log") as proc:
            rows = counter(plain_db, "SELECT count(*) FROM market_conditions")
            assert await eventually(rows, 48_000, timeout=120) == 48_000
            status = Path(f"/proc/{proc.pid}/status").read_text()  # noqa: ASYNC240 - procfs
            peak_kib = int(next(line.split()[1] for line in status.splitlines()
                                if line.startswith("VmHWM:")))
        print(f"peak RSS draining 48 partitions: {peak_kib / 1024:.0f} MiB")
        assert peak_kib < 200 * 1024
    finally:
        await ingest.close()


async def test_every_line_a_flush_logs_says_which_batch_it_is(bars_runner: BarsRunner) -> None:
    """Lines a flush logs carry its topic, batch number, partitions and offsets (structlog
    contextvars), so a log search finds everything about one batch."""
    value = bar_json(symbol="CTX").encode()
    batch = Batch()
    batch.add(bars_runner.pipeline, [bars_runner.record(40 + i, value if i else b"{", partition=2)
                                     for i in range(3)])
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as lines:
        await bars_runner.runner._flush_locked(bars_runner.topic, batch)
    [flushed] = [line for line in lines if line["event"] == "batch.flushed"]
    assert (flushed["topic"], flushed["partitions"], flushed["messages"]) == (
        bars_runner.topic, {"2": "40-42"}, 3)
    # two rows (one bar, twice), the bad one skipped: no dead-letter producer here
    assert (flushed["rows"], flushed["dead_letters"], flushed["batch"]) == (2, 0, 1)
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaks to the loop
