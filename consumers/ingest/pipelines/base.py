"""What a pipeline is: decode one topic's messages and write a batch of its events.

Pipelines know nothing of Kafka offsets or checkpoints; the checkpoint knows nothing of
tables. ``write`` runs inside a transaction the caller owns and either returns (listing the
events it refused for a business rule) or raises: a database data error makes the caller
split the batch to find the bad rows.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from consumers.contracts.encoding import Encoding
from consumers.contracts.free_form import FreeFormGuard, FreeFormLimits, parse_texts
from consumers.contracts.protobuf import ProtoReader
from consumers.errors import ImplausibleTime, NotJsonValue
from consumers.ingest.pipelines.text import TextDecoder
from consumers.ingest.schemas import Framed
from consumers.platform.db import Conn, ConnectionInit, copy_line, copy_lines, queries


@dataclass(frozen=True)
class Rejection:
    """An event the pipeline refused: ``index`` into the batch it was given, and why."""

    index: int
    error_class: str
    reason: str



@dataclass(frozen=True)
class EventTimeSettings:
    """How far event times may disagree with the consumer's clock and with each other."""

    future: timedelta = timedelta(minutes=5)  # an event time further ahead is refused
    skew: timedelta = timedelta(seconds=1)  # tolerated disagreement between two hosts' clocks


def _no_extensions(code: int, data: memoryview) -> Any:
    # A MessagePack extension other than the timestamp (which msgspec reads itself) has no
    # column and no JSON form.
    raise NotJsonValue(f"MessagePack extension type {code} is not part of any contract")


class Pipeline(ABC):
    """One topic's contract and writer."""

    name: ClassVar[str]  # "bars": also the key of its named queries
    event_type: ClassVar[Any]  # the msgspec type messages decode to (a Struct or a Union)
    # Fields holding when the event happened: none of them may lie in the future.
    time_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, times: EventTimeSettings | None = None,
                 free_form: FreeFormLimits | None = None) -> None:
        # float_hook: numbers in free-form JSON (feature vectors, metrics) stay exact, too
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
            self.event_type, float_hook=Decimal)
        self._unpacker: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
            self.event_type, ext_hook=_no_extensions)
        self._proto: ProtoReader | None = None
        self.times = times or EventTimeSettings()
        self.free_form = FreeFormGuard(self.event_type, free_form or FreeFormLimits())

    def decode(self, value: bytes, encoding: Encoding = Encoding.JSON,
               framed: Framed | None = None) -> Any:
        """Raises msgspec.DecodeError (not JSON, MessagePack, Avro or Protobuf),
        msgspec.ValidationError (not the contract) or FreeFormTooLarge (a feature vector or
        payload past its limits). ``framed``: the registered schema an AVRO or PROTOBUF value
        was written with."""
        self.free_form.check_text(value, encoding)
        if encoding is Encoding.JSON:
            event = self._decoder.decode(value)
        elif encoding is Encoding.MSGPACK:
            event = self._unpacker.decode(value)
        else:
            assert framed is not None
            event = msgspec.convert(parse_texts(
                self._record(encoding, framed), self.free_form.names,
                self.free_form.limits.max_bytes), self.event_type)
        self.free_form.check_shape(event, value, encoding)
        return event

    def _record(self, encoding: Encoding, framed: Framed) -> dict[str, Any]:
        """An Avro or Protobuf payload as a dict of the contract's field names."""
        if encoding is Encoding.PROTOBUF:
            return self._protobuf().read(framed.indexes, framed.payload)
        try:
            return framed.schema.read(framed.payload)
        except (EOFError, ValueError, TypeError, IndexError) as exc:  # what a bad payload raises
            raise msgspec.DecodeError(
                f"not Avro of schema id {framed.schema.schema_id}: {exc!r}") from None

    def _protobuf(self) -> ProtoReader:
        if self._proto is None:  # built at the first Protobuf message
            self._proto = ProtoReader(self.event_type)
        return self._proto

    def accept(self, value: bytes, now: datetime, encoding: Encoding = Encoding.JSON,
               framed: Framed | None = None) -> Any:
        """A message's value as ``write`` will get it: decoded, its times checked against the
        clock (``now``, read once per fetch), ready. Raises for anything wrong with the message
        (it becomes a dead letter)."""
        event = self.check_times(self.decode(value, encoding, framed), now)
        ready = self.ready(event)
        self.free_form.forget(event)  # its free-form values live on as text in ``ready``
        return ready

    def check_times(self, event: Any, now: datetime) -> Any:
        """The event, or a corrected copy; raises ImplausibleTime."""
        if not self.time_fields:
            return event
        latest = now + self.times.future
        for name in self.time_fields:
            value = getattr(event, name)
            if value is not None and value > latest:
                raise ImplausibleTime(
                    f"{name}: {value.isoformat()} is more than "
                    f"{self.times.future.total_seconds():g} s ahead of the consumer's clock")
        return event

    def ready(self, event: Any) -> Any:
        """What ``write`` will get for ``event``. Called as each message arrives, so work done
        here overlaps the previous batch's write instead of lengthening this one's. What it
        returns stays in memory until the batch is written: no decoded free-form values."""
        return event

    def with_source(self, ready: Any, record: Any) -> Any:
        """``ready`` with what the pipeline keeps of the Kafka record that carried it (its
        lineage); by default nothing."""
        return ready

    def held_bytes(self, ready: Any) -> int:
        """What ``ready``'s variable-length parts hold (encoded rows, JSON text), for the
        batch's memory account; fixed-size fields are bounded by the batch's row limit."""
        return sys.getsizeof(ready.line) if isinstance(ready, Encoded) else 0

    async def prepare(self, conn: Conn) -> None:
        """Once per connection: create this pipeline's temporary staging tables."""
        for statement in self.staging_ddl():
            await conn.execute(statement)

    def staging_ddl(self) -> Sequence[str]:
        return ()

    async def write_new(self, conn: Conn, events: Sequence[Any]) -> list[Rejection] | None:
        """The fast path, for a batch whose keys are all new (the usual case for a live
        stream): write it, or return None if this pipeline has none (the default) or the batch
        does not qualify.

        Runs in the caller's transaction, which also moves the batch's offsets (sink.py). A
        key that turns out to be stored already must fail it with a unique violation; the
        caller rolls back and writes the batch with ``write`` in a fresh one. Skipping
        savepoints and staging is worth it: for a small batch those round trips cost as much
        as the COPY itself (bench/README.md).
        """
        return None

    @abstractmethod
    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        """Write ``events`` (in Kafka order) inside the caller's transaction, whatever is
        stored already."""


def staging_tables(pipelines: Sequence[Pipeline]) -> ConnectionInit:
    """The connection init of an ingest pool: every pipeline's staging tables."""

    async def prepare(conn: Conn) -> None:
        for pipeline in pipelines:
            await pipeline.prepare(conn)

    return prepare


class CopyUpsertPipeline(Pipeline):
    """COPY into a staging table, then one set-based upsert into the target.

    The staging table has the target's column types plus ``batch_seq`` (position in the batch),
    so the upsert can keep the last version of a key that occurs twice in one batch.

    Fast path (``write_new``): a batch is copied straight into the target, as one statement;
    if none of its keys is stored yet or repeated in it (the usual case for a stream of new
    events) that is all, and the upsert would have inserted exactly those rows. A stored or
    repeated key (a redelivery, a corrected bar) fails that COPY on the target's unique key,
    which leaves nothing, and the batch takes the staged upsert.

    Each event's row is encoded as COPY text as its message arrives (``ready``), while the
    previous batch is being written, so a flush mostly sends bytes. A pipeline with
    ``text_path`` takes most messages straight to that text, its decimals checked as text and
    never built as ``Decimal`` (text.py); its ``columns`` must then be ``text_columns`` of its
    contract, and its ``check_times`` must not correct events.
    """

    stage: ClassVar[str]  # staging table name (temporary, rows deleted at commit)
    target: ClassVar[str]  # the table the upsert writes
    columns: ClassVar[tuple[str, ...]]  # copied columns, in row order
    key: ClassVar[tuple[str, ...]]  # the target's unique key (the upsert's conflict target)
    text_path: ClassVar[bool] = False

    def __init__(self, times: EventTimeSettings | None = None,
                 free_form: FreeFormLimits | None = None) -> None:
        super().__init__(times, free_form)
        # the text path never decodes a value, so it cannot measure one
        assert not (self.text_path and self.free_form.names), "text path with free-form fields"
        self._text = TextDecoder(self.event_type) if self.text_path else None

    def accept(self, value: bytes, now: datetime, encoding: Encoding = Encoding.JSON,
               framed: Framed | None = None) -> Any:
        if self._text is None:
            fast = None
        elif encoding is Encoding.JSON:
            fast = self._text.decode(value)
        elif encoding is Encoding.MSGPACK:
            fast = self._text.decode_packed(value)
        elif encoding is Encoding.AVRO:
            assert framed is not None
            reader = framed.schema.text_reader(self.event_type)
            fast = None if reader is None else reader.read(framed.payload)
        else:
            assert framed is not None
            fast = self._text.decode_record(record) \
                if (record := self._protobuf_text(framed)) is not None else None
        if fast is None:
            return super().accept(value, now, encoding, framed)
        event, line = fast
        self.check_times(event, now)
        return Encoded(event, line)

    def _protobuf_text(self, framed: Framed) -> dict[str, Any] | None:
        """A Protobuf payload with its decimals as text, or None: the exact path reads it
        (and says what is wrong with it)."""
        try:
            return self._protobuf().read(framed.indexes, framed.payload)
        except Exception:
            return None

    def staging_ddl(self) -> Sequence[str]:
        sql = queries("ingest")
        return (sql[f"{self.name}_stage"],)

    @abstractmethod
    def to_row(self, event: Any) -> tuple[Any, ...]:
        """The event's values in ``columns`` order."""

    def ready(self, event: Any) -> Encoded:
        return Encoded(event, copy_line(self.to_row(event)))

    async def write_new(self, conn: Conn, events: Sequence[Any]) -> list[Rejection] | None:
        # A key twice in the batch fails the COPY as a stored one does: the upsert then keeps
        # its last version. Looking for one here cost more than the rare retry.
        encoded: Sequence[Encoded] = events
        await copy_lines(conn, self.target, self.columns, [e.line for e in encoded])
        return []

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        encoded: Sequence[Encoded] = events
        staged = [f"{e.line[:-1]}\t{seq}\n" for seq, e in enumerate(encoded)]  # + batch_seq
        await copy_lines(conn, self.stage, (*self.columns, "batch_seq"), staged)
        await conn.execute(queries("ingest")[f"{self.name}_upsert"])
        return []


class Encoded(msgspec.Struct, frozen=True, gc=False):
    """A decoded event and its row as a line of COPY text, made as the message arrived.

    A Struct, not a NamedTuple: a third of the time to build, one per message. Without GC
    tracking: it holds an event and a string, which never refer back to it."""

    event: Any
    line: str
