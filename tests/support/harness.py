"""A consumer under test: real Runner, broker and database, its own topics and group.

``Ingest`` runs ``cie consume`` in-process (or, for crash tests, as a real subprocess) against
a test database and a fresh set of topics, produces events with the typed producer or raw
bytes, and waits (bounded) for rows and dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers import topics
from consumers.ingest.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_REASON,
    DeadLetters,
    ensure_topics,
    make_consumer,
    make_dead_letter_producer,
    make_producer,
)
from consumers.ingest.pipelines.base import staging_tables
from consumers.ingest.runner import Runner
from consumers.platform.db import create_pool
from consumers.platform.settings import Settings, load_settings
from consumers.producer import Contract, EventProducer
from consumers.topics import TOPICS, Topic
from tests.support.cie import cie_process
from tests.support.ports import PortTaken, log_size, log_text, on_free_port, taken
from tests.support.topic_reading import read_to_end

Headers = Sequence[tuple[str, bytes]]

PARTITIONS = 3


def ingest_environment(kafka: str, database_url: str, **extra: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": database_url,
        "CIE_CONSUMER_GROUP": f"ingest-{tag}",
        "CIE_TOPIC_FILLS": f"fills-{tag}",
        "CIE_TOPIC_PREDICTIONS": f"predictions-{tag}",
        "CIE_TOPIC_BARS": f"bars-{tag}",
        "CIE_TOPIC_IMPROVEMENTS": f"improvements-{tag}",
        "CIE_METRICS_PORT": "0",
        "CIE_BATCH_MAX_ROWS": "500",
        "CIE_BATCH_MAX_LATENCY_MS": "100",
        "CIE_LOG_FORMAT": "json",
        **extra,
    }


class Ingest:
    def __init__(self, environment: dict[str, str], table: Sequence[Topic] = TOPICS) -> None:
        self.environment = environment
        self.table = {topic.name: topic for topic in table}  # the topics it consumes
        self.settings: Settings = load_settings(environment)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._producer = make_producer(self.settings)
        self.producer = EventProducer(self._producer, self.settings)

    def topic(self, pipeline: str) -> str:
        return self.table[pipeline].kafka_name(self.settings)

    async def open(self) -> None:
        sources = [self.topic(name) for name in self.table]
        await ensure_topics(self.settings, sources + [f"{t}.dlq" for t in sources],
                            partitions=PARTITIONS, replication_factor=1)
        await self._producer.start()

    async def close(self, *, delete_topics: bool = True) -> None:
        await self.stop()
        await self._producer.stop()
        if not delete_topics:  # another member of the same group still uses them
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            sources = [self.topic(name) for name in self.table]
            await admin.delete_topics(sources + [f"{t}.dlq" for t in sources])
        finally:
            await admin.close()

    # -- the consumer, in this process ---------------------------------------------------------

    async def start(self) -> None:
        assert self._task is None
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        pipelines = topics.pipelines(self.settings, table=list(self.table.values()))
        pool = await create_pool(self.settings.database_url, staging_tables(list(pipelines.values())))
        consumer = make_consumer(self.settings)
        producer = make_dead_letter_producer(self.settings)
        await producer.start()
        await consumer.start()
        try:
            dead_letters = DeadLetters(producer, self.settings)
            await Runner(self.settings, consumer, pool, dead_letters, pipelines).run(self._stop)
        finally:
            await consumer.stop()
            await producer.stop()
            await pool.close()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        await asyncio.wait_for(task, timeout=60)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- producing -------------------------------------------------------------------------------

    async def send(self, events: Sequence[Contract]) -> None:
        futures = [await self.producer.send(event) for event in events]
        await asyncio.gather(*futures)

    async def send_each(self, messages: Sequence[tuple[str, bytes, bytes, Headers]]) -> None:
        """(Kafka topic, key, value, headers) each, in order."""
        futures = [await self._producer.send(topic, key=key, value=value,
                                             headers=list(headers) or None)
                   for topic, key, value, headers in messages]
        await asyncio.gather(*futures)

    async def send_raw(self, pipeline: str, values: Sequence[bytes], key: bytes | None = None,
                       headers: Sequence[tuple[str, bytes]] = ()) -> None:
        futures = [await self._producer.send(self.topic(pipeline), key=key, value=v,
                                             headers=list(headers) or None) for v in values]
        await asyncio.gather(*futures)

    # -- observing -------------------------------------------------------------------------------

    async def all_dead_letters(self, pipeline: str, timeout: float = 30) -> list[Any]:
        """Every committed record of the pipeline's dead-letter topic, read to its end offset
        (as a read_committed reader sees it): an extra letter is never missed."""
        topic = f"{self.topic(pipeline)}.dlq"
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]  # as open() made
        return await read_to_end(self.settings.kafka_bootstrap_servers, partitions,
                                 timeout=timeout)

    async def committed(self, pipeline: str) -> int:
        """Sum of the group's committed offsets over the pipeline's topic."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.settings.consumer_group, enable_auto_commit=False)
        await consumer.start()
        try:
            total = 0
            for p in range(PARTITIONS):
                offset = await consumer.committed(TopicPartition(self.topic(pipeline), p))
                total += offset or 0
            return total
        finally:
            await consumer.stop()

    async def drained(self, pipeline: str, sent: int, timeout: float = 30) -> None:
        """Wait (bounded) until the group has committed all ``sent`` messages of the pipeline's
        topic: every message, redelivered ones included, has been consumed and its rows (or dead
        letter) committed. Only then can "nothing doubled" or "no dead letter" be asserted."""
        committed = await eventually(lambda: self.committed(pipeline), sent, timeout)
        assert committed == sent, f"{pipeline}: {committed} of {sent} messages committed"


async def eventually(check: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns ``expected`` or ``timeout`` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    value = await check()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await check()
    return value


def counter(database_url: str, query: str, *args: Any) -> Callable[[], Awaitable[Any]]:
    async def count() -> Any:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()
    return count


def row_of(database_url: str, query: str, *args: Any) -> Callable[[], Awaitable[tuple[Any, ...]]]:
    """Like ``counter``, for a query that returns one row of several values."""
    async def fetch() -> tuple[Any, ...]:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(query, *args)
            assert row is not None, query
            return tuple(row)
        finally:
            await conn.close()
    return fetch


def consume_subprocess(environment: dict[str, str], log: Path,
                       *args: str) -> contextlib.AbstractAsyncContextManager[
                           asyncio.subprocess.Process]:
    """``cie consume *args`` as a real process (for SIGKILL and outage tests)."""
    return cie_process(environment, log, "consume", *args)


@contextlib.asynccontextmanager
async def consume_serving_metrics(
    environment: dict[str, str], log: Path, timeout: float = 60
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``consume_subprocess`` with its metrics port open on loopback: yields the process and
    the port it bound (a free port is picked again if another process took it first)."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(port: int) -> tuple[asyncio.subprocess.Process, int]:
            offset = log_size(log)
            proc = await stack.enter_async_context(consume_subprocess(
                {**environment, "CIE_METRICS_HOST": "127.0.0.1", "CIE_METRICS_PORT": str(port)},
                log))
            deadline = time.monotonic() + timeout
            while True:
                text = log_text(log, offset)
                if f'"port": {port}' in text and "metrics.listening" in text:
                    return proc, port
                if proc.returncode is not None:
                    if taken(text):
                        raise PortTaken(port)
                    raise AssertionError(f"cie consume exited before serving: {text[-2000:]}")
                assert time.monotonic() < deadline, "cie consume did not open its metrics port"
                await asyncio.sleep(0.1)

        yield await on_free_port(start)


Sender = Callable[[Ingest], Awaitable[dict[str, int]]]


async def ingest_all(kafka: str, database: str, send: Sender, **extra: str
                     ) -> list[tuple[str, str]]:
    """A consumer of fresh topics writing into ``database``; ``send`` produces to them and
    returns how many messages it sent per topic (short name); returns once every one is
    committed, with the dead letters as (error class, reason)."""
    ingest = Ingest(ingest_environment(kafka, database, **extra))
    await ingest.open()
    try:
        await ingest.start()
        sent = await send(ingest)
        for name, count in sent.items():
            await ingest.drained(name, count, timeout=60)
        return [(dict(r.headers)[DLQ_ERROR_CLASS].decode(), dict(r.headers)[DLQ_REASON].decode())
                for name in ingest.table for r in await ingest.all_dead_letters(name)]
    finally:
        await ingest.close()
