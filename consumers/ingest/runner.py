"""The consume loop: fetch, buffer per topic, flush on size or age, drain at the end.

One asyncio loop per process, one consumer-group member. Records are decoded as they are
fetched, into their topic's Batch (checkpoint.py). A batch is due when it holds
``batch_max_rows`` messages, or ``batch_max_bytes`` (its values and their encoded rows), or
its oldest message has waited ``batch_max_latency_ms``; records fetched past a full batch wait,
undecoded, for the next one.
One flush at a time is in flight, as a task: while PostgreSQL writes it, this loop fetches and
decodes the next batch (on two cores that overlap roughly doubles throughput; the loop lets the
flush go on between passes, let_others_run), and offset commits go on in the background
(checkpoint.py). A batch that falls due while another is in flight keeps taking records until
that flush ends, up to ``batch_backlog_max_rows`` and ``batch_backlog_max_bytes``, and is
flushed next: under a backlog the writer is never idle waiting for a batch to fill, nor the
decoder for the writer, and a flush's fixed costs (a fills flush takes nine round trips) are
spread over more rows. So per topic at most two batches are held in memory, and flushes, with
their offset commits, happen in order. Flushes are serialised by a lock, which the rebalance
listener also takes: partitions are given up only after what was read from them is written and
committed, or, when that takes longer than the drain deadline (the database is down), given up
uncommitted, and nothing read before the revocation is written after it.
On stop (SIGTERM) fetching stops, every buffer is flushed and committed, and the consumer
leaves the group, all within ``drain_deadline_seconds``; past that the process exits without
committing and the unflushed messages are simply read again by the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from consumers.errors import DrainTimeout, RegistryUnavailable
from consumers.ingest.checkpoint import Batch, Checkpoint, Record
from consumers.ingest.kafka import DeadLetters
from consumers.ingest.pipelines.base import Pipeline
from consumers.ingest.schemas import Schemas
from consumers.platform import metrics
from consumers.platform.registry import RegistryClient
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

POLL_SECONDS_MAX = 0.1  # how long one fetch may wait: bounds the reaction to a stop request
# Records decoded per pass of the loop, which yields between passes: a flush in flight (the
# fills' take several round trips) moves on every 10-20 ms, not once per batch decoded.
DECODE_CHUNK = 1000
# How long a fetch waits while a due batch waits for the flush in flight (it starts when
# records arrive or this passes, and the loop then looks at the flush again).
BACKLOG_POLL_SECONDS = 0.005



class Runner:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        dead_letters: DeadLetters | None,
        pipelines: Mapping[str, Pipeline],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._pipelines = pipelines
        self._checkpoint = Checkpoint(
            consumer, pool, dead_letters, pipelines, keep_alive=self._keep_alive,
            backoff=settings.backoff(), group=settings.consumer_group)
        self._schemas = Schemas(RegistryClient(
            settings.schema_registry_url, settings.schema_registry_timeout_seconds)
            if settings.schema_registry_url else None)
        self._buffers: dict[str, Batch] = {}
        # Records fetched after their topic's batch filled up (in bytes), not decoded yet:
        # taken before anything else is fetched, so each partition's order holds.
        self._unbatched: dict[TopicPartition, Sequence[Record]] = {}
        self._oldest: dict[str, float] = {}
        self._flush_lock = asyncio.Lock()
        self._in_flight: asyncio.Task[None] | None = None  # the flush this loop waits for
        self._flushing: asyncio.Task[None] | None = None  # the last flush task started
        self._being_written: Batch | None = None
        self._max_rows = settings.batch_max_rows
        self._backlog_rows = max(settings.batch_max_rows, settings.batch_backlog_max_rows)
        self._max_bytes = settings.batch_max_bytes
        self._backlog_bytes = max(settings.batch_max_bytes, settings.batch_backlog_max_bytes)
        self._max_age = settings.batch_max_latency_ms / 1000
        # Bumped at every revocation: a batch fetched before it is never written after it.
        self._generation = 0
        # When the loop last moved: a fetch returned, or a retry was attempted (/healthz).
        self.progressed_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain. The consumer must be started already."""
        self._consumer.subscribe(list(self._pipelines), listener=_FlushOnRevoke(self))
        log.info("consume.started", topics=sorted(self._pipelines),
                 group=self._settings.consumer_group)
        while not stop.is_set():
            fetched, self._unbatched = self._unbatched, {}
            if not fetched:
                fetched = await self._consumer.getmany(
                    timeout_ms=int(self._poll_seconds() * 1000),
                    max_records=min(DECODE_CHUNK, self._room()))
            if fetched and not await self._learn_schemas(fetched, stop):
                continue  # a rebalance or a stop during a registry outage: fetched again
            now = self.progressed_at = time.monotonic()
            max_held = self._backlog_bytes if self._writing() else self._max_bytes
            for tp, records in fetched.items():
                taken = self._buffer(tp.topic).add(self._pipelines[tp.topic], records, max_held)
                if taken < len(records):  # its batch is full: the rest go in the next one
                    self._unbatched[tp] = records[taken:]
                self._oldest.setdefault(tp.topic, now)
                metrics.MESSAGES_CONSUMED.labels(tp.topic).inc(taken)
            for topic in self._due(now):
                if self._writing() and self._may_grow(self._buffers[topic]):
                    continue  # it grows until the writer is free
                await self._wait_in_flight()
                # taken now, not when the task first runs: by then more records may have come
                batch = self._take(topic)
                self._in_flight = self._flushing = asyncio.create_task(
                    self._flush_locked(topic, batch))
            await let_others_run()
        try:
            await self.drain()
        finally:
            await self._schemas.close()

    async def _learn_schemas(self, fetched: Mapping[TopicPartition, Sequence[Record]],
                             stop: asyncio.Event) -> bool:
        """Look up the schemas ``fetched`` names and this process has not seen. Through a
        registry outage the consumer is paused and kept in its group, as through a database
        outage. False: the records must not be decoded (a stop, or a rebalance, came first;
        they are fetched again from the last commit)."""
        ids = self._schemas.unknown(r.value for records in fetched.values() for r in records)
        if not ids:
            return True
        generation, delays, paused = self._generation, self._settings.backoff().delays(), False
        try:
            while True:
                try:
                    await self._schemas.learn(ids)
                    return self._generation == generation
                except RegistryUnavailable as exc:
                    delay = next(delays)
                    metrics.REGISTRY_RETRIES.inc()
                    log.warning("schema_registry.retry", error=str(exc),
                                retry_in_seconds=round(delay, 2))
                    if not paused:
                        self._consumer.pause(*self._consumer.assignment())
                        paused = True
                    await self._keep_alive()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set() or self._generation != generation:
                        return False
        finally:
            if paused:
                self._consumer.resume(*self._consumer.assignment())
                log.info("schema_registry.recovered")

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(self.flush_all(), self._settings.drain_deadline_seconds)
        except TimeoutError as exc:
            raise DrainTimeout(
                f"{self._unwritten()} messages read but not written and committed within "
                f"{self._settings.drain_deadline_seconds}s (CIE_DRAIN_DEADLINE_SECONDS); "
                f"they will be read again") from exc
        log.info("consume.drained")

    async def flush_all(self) -> None:
        """Write every buffer and wait until all their offsets are committed."""
        await self._wait_in_flight()
        async with self._flush_lock:
            for topic in list(self._buffers):
                await self._write(topic, self._take(topic))
            await self._checkpoint.settle()

    async def _wait_in_flight(self) -> None:
        """Wait for the flush in flight, if any; its failure is this loop's failure (but not
        its cancellation by a revocation that gave its partitions up)."""
        task, self._in_flight = self._in_flight, None
        if task is None:
            return
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise

    async def _flush_locked(self, topic: str, batch: Batch) -> None:
        async with self._flush_lock:
            if batch.generation != self._generation:
                # Taken before a revocation that could not wait for it: its partitions may
                # belong to another member now, which replays them from the last commit.
                log.info("batch.dropped_after_revocation", topic=topic,
                         messages=len(batch.records))
                return
            await self._write(topic, batch)

    async def _write(self, topic: str, batch: Batch) -> None:
        # Left set when the write is cancelled (a drain or revocation past its deadline):
        # its records count among those given up.
        self._being_written = batch
        await self._checkpoint.flush(topic, batch)
        self._being_written = None

    def _unwritten(self) -> int:
        """Messages read and not yet written: the batch being written, the buffered ones,
        and those fetched past a full batch."""
        return (len(self._being_written.records) if self._being_written else 0) + sum(
            len(b.records) for b in self._buffers.values()) + sum(
            len(records) for records in self._unbatched.values())

    async def revoke(self, revoked: list[TopicPartition]) -> None:
        """Before partitions go: write and commit what was read from them, within the drain
        deadline. Past it (the database is down) give them up uncommitted: the next owner
        replays them, and the rebalance is not held up for as long as the outage lasts."""
        deadline = self._settings.drain_deadline_seconds
        try:
            await asyncio.wait_for(self.flush_all(), deadline)
        except TimeoutError:
            if self._flushing is not None:
                self._flushing.cancel()
            dropped = self._unwritten() - sum(  # kept: fetched past a full batch, not revoked
                len(records) for tp, records in self._unbatched.items() if tp not in revoked)
            self._being_written = None
            self._buffers.clear()
            self._oldest.clear()
            self._checkpoint.forget_uncommitted()
            metrics.REVOCATIONS_UNCOMMITTED.inc()
            log.warning("partitions.revoked_uncommitted", deadline_seconds=deadline,
                        buffered_messages_dropped=dropped,
                        partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))
        finally:
            self._generation += 1
            self._checkpoint.forget_positions(revoked)
            for tp in revoked:  # read again from the last commit by whoever owns them next
                self._unbatched.pop(tp, None)
            for tp in revoked:
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    def _buffer(self, topic: str) -> Batch:
        batch = self._buffers.get(topic)
        if batch is None:
            batch = self._buffers[topic] = Batch(
                generation=self._generation, max_value_bytes=self._settings.max_value_bytes,
                schemas=self._schemas)
        return batch

    def _take(self, topic: str) -> Batch:
        """Remove and return the topic's buffered batch."""
        self._oldest.pop(topic, None)
        return self._buffers.pop(topic, None) or Batch(generation=self._generation)

    def _due(self, now: float) -> list[str]:
        return [
            topic for topic, batch in self._buffers.items()
            if len(batch.records) >= self._max_rows or batch.held_bytes >= self._max_bytes
            or now - self._oldest[topic] >= self._max_age
        ]

    def _writing(self) -> bool:
        """Whether the flush this loop last started is still in flight."""
        return self._in_flight is not None and not self._in_flight.done()

    def _may_grow(self, batch: Batch) -> bool:
        return len(batch.records) < self._backlog_rows and batch.held_bytes < self._backlog_bytes

    def _room(self) -> int:
        """Fetch no more than the fullest buffer can take, so batches stay near max rows (near
        the backlog's limit while a flush is in flight)."""
        fullest = max((len(batch.records) for batch in self._buffers.values()), default=0)
        return max(1, (self._backlog_rows if self._writing() else self._max_rows) - fullest)

    def _poll_seconds(self) -> float:
        if not self._oldest:
            return POLL_SECONDS_MAX
        if self._writing() and self._due(time.monotonic()):
            return BACKLOG_POLL_SECONDS
        wait = min(self._oldest.values()) + self._max_age - time.monotonic()
        return max(0.0, min(POLL_SECONDS_MAX, wait))

    async def _keep_alive(self) -> None:
        """While a flush waits out a database outage: a poll on paused partitions, so the group
        does not take this member for dead (max.poll.interval.ms)."""
        await self._consumer.getmany(timeout_ms=0)
        self.progressed_at = time.monotonic()


async def let_others_run() -> None:
    """Let the flush in flight and the fetcher take their turn before the next decoding pass.

    getmany returns buffered records without yielding to the loop: without a yield the flush
    just started, and the fetcher's next request, would wait until the next batch was
    decoded, and writing and decoding would take turns instead of overlapping. Three turns,
    because a reply takes two before the flush goes on: in the first the selector reports the
    socket and the protocol completes the flush's future, in the second the flush resumes;
    with one, each of a fills flush's round trips would wait for a whole decoding pass
    (figures: bench/README.md).
    """
    for _ in range(3):
        await asyncio.sleep(0)


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self._runner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions.assigned",
                 partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
