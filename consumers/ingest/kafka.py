"""Kafka clients built from Settings (security options in one place) and the dead-letter
producer."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from consumers.contracts.encoding import CONTENT_TYPE
from consumers.errors import FatalError
from consumers.platform.settings import Settings

# Header names on every dead letter, beside the original key, value and headers.
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
DLQ_ERROR_CLASS = "dlq.error.class"
DLQ_REASON = "dlq.error.reason"
DLQ_VALUE_TRUNCATED = "dlq.value.truncated"  # the original value's length; the value is cut
DLQ_KEY_TRUNCATED = "dlq.key.truncated"
DLQ_HEADERS_DROPPED = "dlq.headers.dropped"  # how many original headers did not fit


def client_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        options["ssl_context"] = context
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


async def require_broker(settings: Settings, *, timeout_seconds: float = 15) -> None:
    """Log in to a bootstrap server once, or raise what stopped us (refused, the broker's
    certificate not trusted or for another host, SASL credentials rejected): the client's own
    bootstrap only logs each cause and ends in "Unable to bootstrap", which names none."""
    options = client_options(settings)
    servers = options.pop("bootstrap_servers").split(",")
    failure: BaseException | None = None
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            connection = await create_conn(host, int(port), request_timeout_ms=
                                           int(timeout_seconds * 1000), **options)
        except (OSError, KafkaError, TimeoutError) as exc:
            failure = exc
            continue
        connection.close()
        return
    assert failure is not None
    raise failure


def make_consumer(settings: Settings, *, group_id: str | None = None) -> AIOKafkaConsumer:
    """Manual commits, read_committed (transactional producers), earliest on a new group."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=group_id or settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=settings.batch_max_rows,
        # A partition is fetched again only once its fetched records are used up; with the
        # default 1 MiB (about 2,000 bars) draining a backlog kept waiting on fetch round trips
        # (bench: 4 runs each, median 31,600 bars/s at 1 MiB, 44,200 at 4 MiB).
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        # ... and what all partitions' fetches hold together is bounded explicitly (a member
        # holding many partitions must stay within its pod's memory limit).
        fetch_max_bytes=settings.fetch_max_bytes,
        # find topics created after start (e.g. by the first producer) within seconds
        metadata_max_age_ms=10_000,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        group_instance_id=settings.kafka_group_instance_id,
    )


async def rewind(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> None:
    """Put each assigned partition at its first offset. Not ``seek_to_beginning``: assigning
    starts the consumer's default offset reset in the background, and aiokafka applies a reset's
    answer to whatever reset is awaited when it lands, so a "latest" answer arriving after
    ``seek_to_beginning`` can put the reader at the end, and a reader would see nothing. A
    ``seek`` to offsets we fetched ends any awaited reset: a late answer is dropped."""
    firsts = await consumer.beginning_offsets(list(partitions))
    for tp in partitions:
        consumer.seek(tp, firsts[tp])


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    options.update(overrides)
    return AIOKafkaProducer(**client_options(settings), **options)


def make_dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    """Transactional, so dead letters and offsets commit together (DeadLetters). The id is
    unique per process: two live members never fence each other, and a transaction left open
    by a killed process is aborted by the broker after ``transaction_timeout_ms``."""
    return make_producer(
        settings, transactional_id=f"{settings.consumer_group}.dlq.{uuid.uuid4().hex}",
        transaction_timeout_ms=15_000, linger_ms=0,
        max_request_size=settings.producer_max_request_bytes)


async def require_dead_letter_topics(settings: Settings, sources: Sequence[str]) -> None:
    """Create the dead-letter topics that are missing, or stop with their names: a dead
    letter with nowhere to go would hold its partition up for good."""
    wanted = [settings.dead_letter_topic(topic) for topic in sources]
    try:
        await ensure_topics(settings, wanted, partitions=1, replication_factor=None,
                            dead_letters=True)
    except KafkaError as exc:
        raise FatalError(
            f"dead-letter topics {', '.join(wanted)}: missing and could not be created "
            f"({type(exc).__name__}); create them or allow this user to") from exc


def topic_config(*, dead_letters: bool, replicas: int) -> dict[str, str]:
    """The broker settings of a topic this project creates (`cie topics ensure`, and the
    Strimzi KafkaTopics in deploy/k8s/components/strimzi-topics, which a manifest test keeps
    equal). Sources keep 7 days, a long weekend's outage, in the producers' own compression;
    dead letters keep 30 days, time to fix the cause and replay them, in zstd. An acks=all
    write needs every replica but one (at least one): one broker may be down, and a write is
    never on a single copy when there are more."""
    return {
        "retention.ms": str(30 * DAY_MS if dead_letters else 7 * DAY_MS),
        "compression.type": "zstd" if dead_letters else "producer",
        "min.insync.replicas": str(max(1, replicas - 1)),
    }


DAY_MS = 86_400_000


async def ensure_topics(
    settings: Settings, topics: list[str], *, partitions: int, replication_factor: int | None,
    dead_letters: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet, with ``topic_config``; returns the ones it
    created (existing topics are left as they are). ``replication_factor`` None: as many
    replicas as there are brokers, at most three."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        missing = sorted(set(topics) - set(await admin.list_topics()))
        if missing and replication_factor is None:
            brokers = len((await admin.describe_cluster())["brokers"])
            replication_factor = max(1, min(3, brokers))
        if missing:
            assert replication_factor is not None
            config = topic_config(dead_letters=dead_letters, replicas=replication_factor)
            await admin.create_topics([
                NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                         topic_configs=config)
                for name in missing
            ])
        return missing
    finally:
        await admin.close()


@dataclass(frozen=True)
class DeadLetter:
    record: Any  # the aiokafka ConsumerRecord that could not be stored
    error_class: str
    reason: str


# What a dead letter may weigh: the producer's max_request_size less a margin for the record
# batch's own overhead (a few dozen bytes).
DLQ_MARGIN_BYTES = 16 * 1024


class DeadLetters:
    """Dead letters to ``<topic><suffix>``, exactly once.

    The letters of a batch go out in one Kafka transaction together with the batch's consumer
    offsets (``send_offsets_to_transaction``): either both are committed or neither is. A
    crash after the rows were written and before that transaction commits replays the batch;
    the rows are idempotent and the letters of the aborted attempt are invisible to
    ``read_committed`` readers, so each bad message is in its DLQ once.
    The key, value and headers are the original's, plus the ``dlq.*`` headers; a value too
    large for the DLQ is cut, and ``dlq.value.truncated`` says how long it was (the original
    stays at its source coordinates until the topic's retention removes it).
    """

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self._producer = producer  # transactional (make_dead_letter_producer)
        self._settings = settings

    async def commit(
        self, letters: Sequence[DeadLetter], offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Produce ``letters`` and commit ``offsets`` for the group, atomically."""
        async with self._producer.transaction():
            for letter in letters:
                key, value, headers = dead_letter_message(
                    letter, self._settings.producer_max_request_bytes - DLQ_MARGIN_BYTES)
                await self._producer.send(
                    self._settings.dead_letter_topic(letter.record.topic),
                    key=key, value=value, headers=headers)
            await self._producer.send_offsets_to_transaction(
                dict(offsets), self._settings.consumer_group)


def dead_letter_message(
    letter: DeadLetter, max_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The DLQ record's key, value and headers for ``letter``: the original's, plus ours,
    cut down to ``max_bytes`` (key first, then the original headers but the content type,
    then the value), each cut said in a header."""
    record = letter.record
    ours = [
        (DLQ_TOPIC, record.topic.encode()),
        (DLQ_PARTITION, str(record.partition).encode()),
        (DLQ_OFFSET, str(record.offset).encode()),
        (DLQ_ERROR_CLASS, letter.error_class.encode()[:200]),
        (DLQ_REASON, letter.reason.encode(errors="replace")[:4000]),
    ]
    key: bytes | None = record.key
    value: bytes | None = record.value
    original = list(record.headers or ())
    room = max_bytes - _header_bytes(ours) - 256  # 256: the headers saying what was cut
    if key is not None and len(key) > room // 2:
        ours.append((DLQ_KEY_TRUNCATED, str(len(key)).encode()))
        key = key[:1024]
    room -= len(key or b"")
    if _header_bytes(original) > room:
        # the content type is kept (it is short): without it a MessagePack letter would be
        # replayed as JSON
        kept = [(n, v) for n, v in original if n.lower() == CONTENT_TYPE and len(v) <= 256][:1]
        ours.append((DLQ_HEADERS_DROPPED, str(len(original) - len(kept)).encode()))
        original = kept
    room -= _header_bytes(original)
    if value is not None and len(value) > room:
        ours.append((DLQ_VALUE_TRUNCATED, str(len(value)).encode()))
        value = value[:max(0, room)]
    return key, value, original + ours


def _header_bytes(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) + 8 for name, value in headers)  # 8: their framing
