"""The checkpoint: the one place where a batch becomes rows and then committed offsets.

A Batch holds one topic's records, decoded as they were fetched: a record that is not valid
JSON, breaks its contract, or makes the decoder raise anything at all is already a dead
letter with its reason (naming the field where msgspec can).
Flushing a batch, in this order:
1. write the decoded events in one transaction (ingest/sink.py), splitting the batch only
   to isolate rows the database refuses; rejected rows become dead letters too. The same
   transaction moves each partition's position in the database past the rows
   (ingest/positions.py), and events below it, written before a crash or a rebalance, are
   skipped instead of written again; a transient
   error (platform/faults.py) retries the whole batch with capped exponential backoff while
   the consumer is paused (memory stays bounded, the group membership stays alive);
2. commit, per partition, the offset after the batch's last record, in one Kafka transaction
   with the batch's dead letters (ingest/kafka.py, DeadLetters), or as a plain offset commit
   when there are none.
Offsets are never committed before the rows they carry are. A crash anywhere before step 2
makes the next owner read the batch again: what step 1 committed is skipped (and every write
is idempotent besides), so a replay writes nothing twice; the dead letters of an aborted
attempt are invisible to read_committed readers and are sent again with the replay.
Step 2 runs in the background: the broker's answer (several ms) overlaps the next batches'
database writes instead of delaying them. One commit is in flight at a time; offsets (and dead
letters) of batches written meanwhile are merged (the highest offset per partition) and go in
the next one, so small batches are not held to one broker round trip each. ``settle`` waits
until every written batch's offsets are committed (drain, revocation).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers.contracts.encoding import Declared, Encoding, declared
from consumers.errors import FatalError, PositionMoved, TransientError
from consumers.ingest.kafka import DeadLetter, DeadLetters
from consumers.ingest.pipelines.base import Pipeline
from consumers.ingest.positions import BatchSeal, Positions, stored_rejections
from consumers.ingest.schemas import NO_REGISTRY, Schemas
from consumers.ingest.sink import write_batch
from consumers.platform import metrics
from consumers.platform.faults import Backoff, classify, describe

log = structlog.get_logger(__name__)

# aiokafka.structs.ConsumerRecord[bytes, bytes]; aiokafka ships no type hints
Record: TypeAlias = Any



@dataclass
class Batch:
    """One topic's records since its last flush, decoded as they arrived.

    ``generation`` is the consumer's assignment generation when the records were fetched: a
    batch from before a revocation is not written afterwards (its partitions may have moved).
    """

    generation: int = 0
    max_value_bytes: int | None = None  # a larger value is a dead letter, never decoded
    schemas: Schemas = NO_REGISTRY  # the registry's schemas, learned before ``add``
    records: list[Record] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    event_records: list[Record] = field(default_factory=list)  # the record of each event
    letters: list[DeadLetter] = field(default_factory=list)
    # What the batch holds in memory beyond a fixed amount per row: the values it was sent
    # and what their decoded rows keep (pipeline.held_bytes). A batch is due, and a due batch
    # stops growing, at byte limits as well as row limits (runner.py).
    held_bytes: int = 0

    def add(self, pipeline: Pipeline, records: Sequence[Record],
            max_held_bytes: int | None = None) -> int:
        """Decode records, in order, into events or dead letters until the batch holds
        ``max_held_bytes`` (at least one record is taken); never raises for their content.
        Returns how many were taken: the caller keeps the rest, still undecoded."""
        now = datetime.now(UTC)
        taken = 0
        for record in records:
            if max_held_bytes is not None and self.held_bytes >= max_held_bytes and self.records:
                break
            taken += 1
            self.records.append(record)
            value = record.value
            if value is None or (
                    self.max_value_bytes is not None and len(value) > self.max_value_bytes):
                self.letters.append(self._refuse(record))
                continue
            self.held_bytes += len(value)
            encoding = declared(record.headers)
            try:
                ready = pipeline.with_source(self._accept(pipeline, record, value, now, encoding),
                                             record)
                self.held_bytes += pipeline.held_bytes(ready)
                self.events.append(ready)
                self.event_records.append(record)
            except msgspec.ValidationError as exc:
                self.letters.append(
                    DeadLetter(record, "ValidationError", encoding.explain(str(exc))))
            except msgspec.DecodeError as exc:
                self.letters.append(DeadLetter(record, "DecodeError", encoding.explain(str(exc))))
            except Exception as exc:
                # Whatever else one message's content provokes (RecursionError on deep nesting,
                # OverflowError, MemoryError, a bug only some inputs reach) is that message's
                # fault: it must not stop its partition, let alone all four topics.
                self.letters.append(DeadLetter(record, type(exc).__name__, describe(exc)))
        return taken

    def _accept(self, pipeline: Pipeline, record: Record, value: bytes, now: datetime,
                encoding: Declared) -> Any:
        if encoding.encoding is Encoding.JSON and (
                framed := self.schemas.framed(value, record.topic)) is not None:
            return pipeline.accept(framed.payload, now, framed.schema.encoding, framed)
        return pipeline.accept(value, now, encoding.encoding)

    def _refuse(self, record: Record) -> DeadLetter:
        if record.value is None:
            return DeadLetter(record, "EmptyMessage", "message has no value")
        return DeadLetter(
            record, "MessageTooLarge",
            f"value is {len(record.value)} bytes; at most {self.max_value_bytes} are decoded")


class Checkpoint:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        dead_letters: DeadLetters | None,
        pipelines: Mapping[str, Pipeline],
        *,
        keep_alive: Callable[[], Awaitable[None]],
        backoff: Backoff,
        group: str,
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._positions = Positions(group)
        self._dead_letters = dead_letters  # None: a reader only (the validator); skip them
        self._pipelines = pipelines
        self._keep_alive = keep_alive  # called while waiting out a database outage
        self._backoff = backoff
        self._to_commit: dict[TopicPartition, int] = {}  # written, not yet sent to commit
        self._letters: list[DeadLetter] = []  # to produce with the next commit
        self._committer: asyncio.Task[None] | None = None  # sends _to_commit until it is empty
        self._flushed = 0  # batches flushed by this process: the ``batch`` of its log lines

    async def flush(self, topic: str, batch: Batch) -> None:
        """Write ``batch``; every line logged meanwhile (retries, dead letters, the flush)
        says which topic, partitions and offsets it carries."""
        records = batch.records
        if not records:
            return
        spans = _offset_spans(records)
        self._flushed += 1
        with structlog.contextvars.bound_contextvars(
            topic=topic, batch=self._flushed, messages=len(records),
            partitions={str(p): f"{low}-{high}" for p, (low, high) in sorted(spans.items())},
        ):
            await self._flush(topic, batch, spans)

    async def _flush(self, topic: str, batch: Batch, spans: dict[int, tuple[int, int]]) -> None:
        records = batch.records
        started = time.perf_counter()
        pipeline = self._pipelines[topic]
        refused, skipped, written = (await self._write_with_retries(topic, pipeline, batch, spans)
                                     if batch.events else ([], 0, 0))
        letters = batch.letters + refused
        if letters and self._dead_letters is None:
            metrics.UNDECODABLE_SKIPPED.labels(topic).inc(len(letters))
            letters = []
        self._queue_commit(topic, spans, letters)

        if skipped:
            metrics.REPLAY_SKIPPED.labels(topic).inc(skipped)
        elapsed = time.perf_counter() - started
        metrics.ROWS_WRITTEN.labels(topic).inc(written)
        metrics.FLUSHES.labels(topic).inc()
        metrics.LAST_FLUSH.labels(topic).set_to_current_time()
        metrics.BATCH_SIZE.labels(topic).observe(len(records))
        metrics.FLUSH_SECONDS.labels(topic).observe(elapsed)
        log.info("batch.flushed", rows=written, dead_letters=len(letters),
                 seconds=round(elapsed, 4), **({"skipped_as_written": skipped} if skipped else {}))

    async def settle(self) -> None:
        """Wait until every written batch's offsets are committed (the caller holds off new
        flushes); a commit's failure is the caller's."""
        task, self._committer = self._committer, None
        if task is not None:
            await task

    def forget_positions(self, partitions: Sequence[TopicPartition]) -> None:
        """Revoked: read their positions again if they come back (another member may have
        moved them meanwhile)."""
        for tp in partitions:
            self._positions.forget(tp.topic, [tp.partition])

    def forget_uncommitted(self) -> None:
        """The partitions were given up before their batches could be written: commit none of
        their offsets (the next owner replays them)."""
        self._to_commit = {}
        self._letters = []
        task, self._committer = self._committer, None
        if task is not None:
            task.cancel()

    def _queue_commit(
        self, topic: str, spans: dict[int, tuple[int, int]], letters: list[DeadLetter]
    ) -> None:
        self._letters += letters
        for partition, (_, high) in spans.items():
            tp = TopicPartition(topic, partition)
            self._to_commit[tp] = max(self._to_commit.get(tp, 0), high + 1)
        if self._committer is not None and self._committer.done():
            finished, self._committer = self._committer, None
            finished.result()  # a commit that failed fails this flush, not silently
        if self._committer is None:
            # its own (empty) log context: it commits the offsets of whichever batches wait
            self._committer = asyncio.create_task(
                self._commit_queued(), context=contextvars.Context())

    async def _commit_queued(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            letters, self._letters = self._letters, []
            await self._commit(offsets, letters)

    async def _write_with_retries(
        self, topic: str, pipeline: Pipeline, batch: Batch, spans: dict[int, tuple[int, int]]
    ) -> tuple[list[DeadLetter], int, int]:
        delays = self._backoff.delays()
        paused = False
        try:
            while True:
                try:
                    return await self._write_unwritten(topic, pipeline, batch, spans)
                except PositionMoved as exc:
                    metrics.POSITIONS_MOVED.labels(topic).inc()
                    log.warning("positions.moved", topic=topic, error=str(exc))
                except TransientError as exc:
                    delay = next(delays)
                    metrics.RETRIES.labels(topic).inc()
                    log.warning("database.retry", topic=topic, error=str(exc),
                                retry_in_seconds=round(delay, 2))
                    if not paused:
                        self._consumer.pause(*self._consumer.assignment())
                        paused = True
                    await self._keep_alive()
                    await asyncio.sleep(delay)
        finally:
            if paused:
                self._consumer.resume(*self._consumer.assignment())
                log.info("database.recovered", topic=topic)

    async def _write_unwritten(
        self, topic: str, pipeline: Pipeline, batch: Batch, spans: dict[int, tuple[int, int]]
    ) -> tuple[list[DeadLetter], int, int]:
        """Write the batch's events the database does not hold yet. Returns the dead letters
        of those it refused (now, or when first written), how many were skipped and how many
        written."""
        await self._positions.load(self._pool, topic, spans)
        records, events = batch.event_records, batch.events
        letters: list[DeadLetter] = []
        skipped = 0
        # the usual case, all of it new: the batch moves each partition past its span
        whole: dict[int, int] | None = {p: high + 1 for p, (_, high) in spans.items()}
        if self._positions.behind(topic, spans):
            # read again after a crash or a rebalance: written, or refused, before
            keep, skip = self._positions.unwritten(records)
            refused = await stored_rejections(
                self._pool, self._positions.group, [records[i] for i in skip])
            letters = [DeadLetter(records[i], *refused[key]) for i in skip
                       if (key := (records[i].partition, records[i].offset)) in refused]
            records, events = [records[i] for i in keep], [events[i] for i in keep]
            skipped, whole = len(skip), None  # a partition all skipped must not move back
        rejections = await write_batch(
            self._pool, pipeline, events, BatchSeal(self._positions, topic, records, whole))
        letters += [DeadLetter(records[r.index], r.error_class, r.reason) for r in rejections]
        return letters, skipped, len(events) - len(rejections)

    async def _commit(self, offsets: dict[TopicPartition, int], letters: list[DeadLetter]) -> None:
        """Commit ``offsets``, with ``letters`` in the same Kafka transaction if there are any;
        transient broker errors (a restart, a moved coordinator) are retried."""
        delays = self._backoff.delays()
        while True:
            try:
                if letters and self._dead_letters is not None:
                    await self._dead_letters.commit(letters, offsets)
                    for letter in letters:
                        metrics.DEAD_LETTERS.labels(letter.record.topic, letter.error_class).inc()
                else:
                    await self._consumer.commit(offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced mid-batch: the new owner replays from the last commit,
                # and the rows just written make that replay a no-op.
                log.warning("commit.refused_after_rebalance", error=str(exc))
                return
            except KafkaError as exc:
                if classify(exc) != "transient":
                    raise FatalError(f"committing offsets: {describe(exc)}") from exc
                delay = next(delays)
                log.warning("commit.retry", error=describe(exc), retry_in_seconds=delay,
                            dead_letters=len(letters))
                await asyncio.sleep(delay)


def _offset_spans(records: Sequence[Record]) -> dict[int, tuple[int, int]]:
    """Lowest and highest offset per partition of one topic's batch: what the log reports and
    what is committed (highest + 1)."""
    # grouped first, then min and max over each list: a fifth of the time of a (low, high)
    # pair kept up to date per record, which was 4 % of a bars consumer's time
    offsets: dict[int, list[int]] = {}
    for record in records:
        offsets.setdefault(record.partition, []).append(record.offset)
    return {partition: (min(found), max(found)) for partition, found in offsets.items()}
