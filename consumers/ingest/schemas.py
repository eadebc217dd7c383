"""Messages a schema registry's serializer framed: the schema each one names, looked up once.

Confluent's wire format, which Confluent's, Apicurio's and most other registry serializers
write: a zero byte, the schema's id (4 bytes, big-endian), then the payload in that schema's
kind: Avro (binary, no header), JSON checked against a JSON Schema, or Protobuf after the
index of its message in the schema (zigzag varints: a count, then the indexes; a lone 0 for
the first message). No JSON text and no
MessagePack message declared by its header starts with a zero byte, so the framing is told
from the first byte, per message, with no setting.

The consume loop asks ``Schemas.learn`` for the ids of every fetch it has not seen, before
decoding (an outage of the registry pauses the loop like a database outage: nothing is
dead-lettered because the registry was down); decoding then finds them in memory. Ids are
immutable, so they are kept for the life of the process, the registry's refusals too.
A message is a dead letter (``UnknownSchema``) when its id is unknown to the registry, when
its schema is registered under another subject than the topic's (``<topic>-value``), or when
it is a kind not read here.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import fastavro
import fastavro.types

from consumers.contracts.base import Contract
from consumers.contracts.encoding import Encoding
from consumers.errors import UnknownSchema
from consumers.ingest.pipelines.avro_text import AvroTextReader, avro_text_reader, zigzag_varint
from consumers.platform.registry import RegisteredSchema, RegistryClient

FRAME = 5  # the zero byte and the schema id
_PROTOBUF = Encoding.PROTOBUF  # a global: a third of the time of the enum's attribute
# Ids the registry said it does not hold, kept so a fetch full of them is looked up once;
# more than a fetch (runner.DECODE_CHUNK records) can name, so no id is forgotten between its
# lookup and its decoding.
ABSENT_KEPT = 10_000


@dataclass(frozen=True)
class Schema:
    """A registered schema as decoding needs it."""

    schema_id: int
    encoding: Encoding  # AVRO, JSON or PROTOBUF
    subjects: frozenset[str]
    avro: fastavro.types.Schema | None = None  # parsed, for AVRO
    avro_json: Any = None  # as the registry gave it, for AVRO
    _text_readers: dict[type[Contract], AvroTextReader | None] = field(
        default_factory=dict, compare=False, repr=False)

    def text_reader(self, contract: type[Contract]) -> AvroTextReader | None:
        """The text path's reader of this Avro schema's records for ``contract``, compiled
        at its first message (None: its messages take the exact path)."""
        if contract not in self._text_readers:
            self._text_readers[contract] = avro_text_reader(self.avro_json, contract)
        return self._text_readers[contract]

    def read(self, payload: bytes) -> dict[str, Any]:
        """An Avro payload as the record fastavro reads (decimals, times and UUIDs typed)."""
        assert self.avro is not None
        record = fastavro.schemaless_reader(io.BytesIO(payload), self.avro, None)
        if not isinstance(record, dict):
            raise ValueError(f"an Avro {type(record).__name__}, not a record")
        return record


class Framed(NamedTuple):  # a tuple: made for every framed message, a dataclass costs more
    schema: Schema
    payload: bytes
    indexes: tuple[int, ...] = ()  # Protobuf: which message of the schema


def message_indexes(value: bytes, at: int) -> tuple[tuple[int, ...], bytes]:
    """Confluent's Protobuf message indexes at ``value[at:]``, and the payload after them.
    Raises UnknownSchema for indexes cut short."""
    try:
        count, at = zigzag_varint(value, at)
        if count == 0:
            return (0,), value[at:]
        indexes = []
        for _ in range(min(count, 64)):
            index, at = zigzag_varint(value, at)
            indexes.append(index)
    except (IndexError, ValueError):
        raise UnknownSchema("the Protobuf message index is cut short") from None
    return tuple(indexes), value[at:]


class Schemas:
    """The schemas this process has looked up, by id; ``client`` None: no registry set."""

    def __init__(self, client: RegistryClient | None, absent_kept: int = ABSENT_KEPT) -> None:
        self._client = client
        self._absent_kept = absent_kept
        # what the registry holds, str: why no message of it is read (as many as it holds)
        self._known: dict[int, Schema | str] = {}
        # ids it does not hold: any producer can make up billions, so only the latest are kept
        self._absent: OrderedDict[int, None] = OrderedDict()
        # (the id's 4 bytes, topic) → the schema, checked for the topic's messages (as many as
        # the known schemas)
        self._checked: dict[tuple[bytes, str], Schema] = {}

    def unknown(self, values: Iterable[bytes | None]) -> set[int]:
        """The ids of framed ``values`` not looked up yet."""
        if self._client is None:
            return set()
        # the ids' bytes first: a set of a few, made without a call per message
        raw = {v[1:FRAME] for v in values if v and v[0] == 0 and len(v) >= FRAME}
        ids = {int.from_bytes(r, "big") for r in raw}
        return {i for i in ids if i not in self._known and i not in self._absent}

    async def learn(self, ids: Iterable[int]) -> None:
        """Look ``ids`` up; raises RegistryUnavailable (those not reached stay unknown)."""
        assert self._client is not None
        for schema_id in sorted(ids):
            found = await self._client.schema(schema_id)
            if found is not None:
                self.remember(found)
                continue
            self._absent[schema_id] = None
            if len(self._absent) > self._absent_kept:
                self._absent.popitem(last=False)

    def remember(self, found: RegisteredSchema) -> None:
        """Keep a schema the registry gave (``learn``; benchmarks and tests give their own)."""
        self._known[found.schema_id] = _readable(found.schema_id, found)
        self._checked = {key: v for key, v in self._checked.items()
                         if int.from_bytes(key[0], "big") != found.schema_id}

    def framed(self, value: bytes, topic: str) -> Framed | None:
        """The schema and payload of a framed value, None if it is not framed; raises
        UnknownSchema for a schema this topic's messages cannot be read with."""
        if len(value) < FRAME or value[0] != 0:
            return None
        schema = self._checked.get((value[1:FRAME], topic))
        if schema is None:  # the first message of this schema in this topic
            schema_id = int.from_bytes(value[1:FRAME], "big")
            schema = self._checked[value[1:FRAME], topic] = self._check(schema_id, topic)
        if schema.encoding is _PROTOBUF:
            indexes, payload = message_indexes(value, FRAME)
            return Framed(schema, payload, indexes)
        return Framed(schema, value[FRAME:])

    def _check(self, schema_id: int, topic: str) -> Schema:
        """The schema ``schema_id`` if ``topic``'s messages can be read with it; raises
        UnknownSchema."""
        known = self._known.get(schema_id)
        if known is None and self._client is None:
            raise UnknownSchema(
                f"framed by a schema registry serializer (schema id {schema_id}), and no "
                "registry is set (CIE_SCHEMA_REGISTRY_URL)")
        if known is None:  # looked up before this fetch was decoded (runner.py): not there
            raise UnknownSchema(f"schema id {schema_id} is not in the schema registry")
        if isinstance(known, str):
            raise UnknownSchema(known)
        subject = f"{topic}-value"
        if subject not in known.subjects:
            raise UnknownSchema(
                f"schema id {schema_id} is registered under {', '.join(sorted(known.subjects))}"
                f", not {subject}")
        return known

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


NO_REGISTRY = Schemas(None)


def _readable(schema_id: int, found: RegisteredSchema) -> Schema | str:
    match found.kind:
        case "AVRO":
            try:
                written = json.loads(found.text)
                parsed = fastavro.parse_schema(written)
            except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException) as exc:
                return f"schema id {schema_id}: not a usable Avro schema: {exc}"
            return Schema(schema_id, Encoding.AVRO, found.subjects, parsed, written)
        case "JSON":
            return Schema(schema_id, Encoding.JSON, found.subjects)
        case "PROTOBUF":
            return Schema(schema_id, Encoding.PROTOBUF, found.subjects)
        case kind:
            return (f"schema id {schema_id} is {kind}; this consumer reads Avro, JSON Schema "
                    "and Protobuf from a registry")
