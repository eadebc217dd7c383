"""Dead letters you can act on: list them (`cie dlq show`) and, once the cause is fixed,
send them back to their source topic (`cie dlq replay`).

A dead letter carries the original key, value and headers plus the ``dlq.*`` headers saying
where it came from and why it was refused (consumers/ingest/kafka.py). A replay republishes
key, value and original headers to the topic the dead-letter topic belongs to (its name
without the suffix; never the topic a letter's own header names: whoever may write to a
dead-letter topic would otherwise choose where the operator's replay publishes) with a
``cie.replayed.from`` header; a letter whose header names another topic is refused. It
records how far it got as the committed offset of a consumer group of its own (one per
``--class`` filter), in the same Kafka transaction as the republished messages: a second run
starts where the first stopped and never sends a letter twice. A letter whose value or key
was cut to fit the DLQ cannot be replayed as it was sent: it is reported and skipped.

That position lives as long as Kafka keeps an idle group's offsets (the broker's
``offsets.retention.minutes``: 7 days by default, set to 366 days in deploy/). Where there is
none, a replay never starts from the beginning by itself (a second pass over old letters would
write their stale values over later corrections): it stops and asks for ``--from-beginning``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.errors import ReplayPositionMissing
from consumers.ingest.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_KEY_TRUNCATED,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    DLQ_VALUE_TRUNCATED,
    client_options,
    make_producer,
    rewind,
)
from consumers.platform.settings import Settings

REPLAYED_FROM = "cie.replayed.from"  # header on a replayed message: <dlq>:<partition>:<offset>
TRANSACTION_LETTERS = 500  # letters per replay transaction (with their offsets)
METADATA_ATTEMPTS = 5  # metadata updates before a dead-letter topic counts as absent
METADATA_PAUSE_SECONDS = 0.3


@dataclass(frozen=True)
class Letter:
    dlq: TopicPartition
    offset: int
    dead_lettered_at: datetime
    source: str  # the topic it was refused from
    source_partition: int
    source_offset: int
    error_class: str
    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]  # the original message's own headers
    cut: bool  # key or value was cut to fit the DLQ: not replayable as sent

    @classmethod
    def of(cls, record: Any) -> Letter:  # an aiokafka ConsumerRecord of a DLQ topic
        headers: list[tuple[str, bytes]] = list(record.headers or ())
        ours = {name: value for name, value in headers if name.startswith("dlq.")}
        return cls(
            dlq=TopicPartition(record.topic, record.partition),
            offset=record.offset,
            dead_lettered_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            source=ours.get(DLQ_TOPIC, b"").decode(errors="replace"),
            source_partition=int(ours.get(DLQ_PARTITION, b"-1")),
            source_offset=int(ours.get(DLQ_OFFSET, b"-1")),
            error_class=ours.get(DLQ_ERROR_CLASS, b"").decode(errors="replace"),
            reason=ours.get(DLQ_REASON, b"").decode(errors="replace"),
            key=record.key,
            value=record.value,
            headers=[(n, v) for n, v in headers if not n.startswith("dlq.")],
            cut=DLQ_VALUE_TRUNCATED in ours or DLQ_KEY_TRUNCATED in ours,
        )

    def line(self) -> str:
        """One line for people: where it is, where it came from, why it was refused. What a
        producer chose (key, and the reason quoting its message) is printed with control
        characters escaped, so none reaches the operator's terminal."""
        key = self.key.decode(errors="replace") if self.key is not None else "-"
        cut = " [cut to fit: not replayable]" if self.cut else ""
        return (f"{self.dlq.topic}[{self.dlq.partition}]@{self.offset} "
                f"{self.dead_lettered_at.isoformat(timespec='seconds')} "
                f"from {printable(self.source)}[{self.source_partition}]@{self.source_offset} "
                f"key={printable(key)} {printable(self.error_class)}: "
                f"{printable(self.reason)}{cut}")


def printable(text: str) -> str:
    """``text`` with every character that is not printable (escape sequences, newlines,
    bidirectional overrides) written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


async def letters(
    settings: Settings, dlq_topic: str, *, since: datetime | None = None,
    start: dict[TopicPartition, int] | None = None, group: str | None = None,
) -> AsyncIterator[Letter]:
    """The dead letters of ``dlq_topic`` as a read_committed reader sees them, from the
    beginning (or ``since`` a time, or the offsets in ``start``) to the end offsets at the
    time of the call."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [TopicPartition(dlq_topic, p)
                      for p in sorted(await _partitions(consumer, dlq_topic))]
        consumer.assign(partitions)
        await rewind(consumer, partitions)
        ends = await consumer.end_offsets(partitions)
        if since is not None:
            found = await consumer.offsets_for_times(
                dict.fromkeys(partitions, int(since.timestamp() * 1000)))
            for tp in partitions:
                consumer.seek(tp, found[tp].offset if found[tp] is not None else ends[tp])
        for tp, offset in (start or {}).items():
            consumer.seek(tp, offset)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(*partitions, timeout_ms=500)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield Letter.of(record)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions, none if it does not exist. A metadata update leaves out a
    topic whose metadata has an error at that moment (a busy broker, a leader being elected),
    so a topic not found is asked about again, for at most METADATA_ATTEMPTS updates (a
    dead-letter topic made a moment ago has no leader yet)."""
    for attempt in range(1, METADATA_ATTEMPTS + 1):
        await consumer._client.force_metadata_update()
        partitions: set[int] | None = consumer.partitions_for_topic(topic)
        if partitions:
            return partitions
        if attempt < METADATA_ATTEMPTS:
            await asyncio.sleep(METADATA_PAUSE_SECONDS)
    return set()


@dataclass
class ReplayReport:
    replayed: list[Letter] = field(default_factory=list)
    other_class: int = 0
    not_replayable: list[Letter] = field(default_factory=list)
    misaddressed: list[Letter] = field(default_factory=list)  # naming another source topic


def replay_group(settings: Settings, error_class: str | None) -> str:
    """Each filter keeps its own progress: replaying one class never skips another's."""
    return f"{settings.consumer_group}.dlq-replay.{error_class or 'all'}"


async def replay(
    settings: Settings, dlq_topic: str, *, error_class: str | None = None,
    until: int | None = None, dry_run: bool = False, from_beginning: bool = False,
) -> ReplayReport:
    """Republish the dead letters of ``dlq_topic`` (those of ``error_class``, before DLQ
    offset ``until``) to the topic it belongs to, from where the last replay with this
    filter stopped; from the first letter only when ``from_beginning`` says so."""
    if not dlq_topic.endswith(settings.dead_letter_suffix):
        raise ValueError(f"{dlq_topic}: not a dead-letter topic "
                         f"(its name ends with {settings.dead_letter_suffix})")
    source = dlq_topic.removesuffix(settings.dead_letter_suffix)
    group = replay_group(settings, error_class)
    start = await _committed(settings, dlq_topic, group)
    if not start and not from_beginning and not dry_run:
        raise ReplayPositionMissing(
            f"no replay position in consumer group {group}: this filter never replayed "
            f"{dlq_topic}, or its position expired (offsets.retention.minutes); "
            "--from-beginning replays every letter from the first (see --dry-run)")
    report = ReplayReport()
    producer = None if dry_run else make_producer(
        settings, transactional_id=f"{group}.{uuid.uuid4().hex}", linger_ms=5)
    if producer is not None:
        await producer.start()
    try:
        pending: list[Letter] = []  # letters looked at since the last commit
        async for letter in letters(settings, dlq_topic, start=start, group=group):
            if until is not None and letter.offset >= until:
                continue
            pending.append(letter)
            if letter.cut:
                report.not_replayable.append(letter)
            elif letter.source != source:
                report.misaddressed.append(letter)
            elif error_class is not None and letter.error_class != error_class:
                report.other_class += 1
            else:
                report.replayed.append(letter)
            if producer is not None and len(pending) >= TRANSACTION_LETTERS:
                await _send(producer, source, pending, report, group)
                pending = []
        if producer is not None and pending:
            await _send(producer, source, pending, report, group)
    finally:
        if producer is not None:
            await producer.stop()
    return report


async def _committed(settings: Settings, dlq_topic: str, group: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, dlq_topic)
        committed = {}
        for p in partitions:
            offset = await consumer.committed(TopicPartition(dlq_topic, p))
            if offset is not None:
                committed[TopicPartition(dlq_topic, p)] = offset
        return committed
    finally:
        await consumer.stop()


async def _send(producer: AIOKafkaProducer, source: str, looked_at: Sequence[Letter],
                report: ReplayReport, group: str) -> None:
    """One transaction: the replayed letters among ``looked_at``, to ``source``, and the
    replay group's new position past all of them."""
    chosen = {id(letter) for letter in report.replayed}
    async with producer.transaction():
        for letter in looked_at:
            if id(letter) in chosen:
                await producer.send(
                    source, key=letter.key, value=letter.value,
                    headers=[*letter.headers, (REPLAYED_FROM, (
                        f"{letter.dlq.topic}:{letter.dlq.partition}:{letter.offset}").encode())])
        positions: dict[TopicPartition, int] = {}
        for letter in looked_at:
            positions[letter.dlq] = max(positions.get(letter.dlq, 0), letter.offset + 1)
        await producer.send_offsets_to_transaction(positions, group)
