"""The stack's schema registry (Apicurio, deploy/local/stack.sh), producers that serialize the
way Python shops do (confluent-kafka's own Avro and JSON Schema serializers), and a loopback
TCP relay to the registry that a test can cut, for outages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import msgspec
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.message import Message

from consumers.contracts.free_form import free_form_fields
from consumers.contracts.protobuf import ProtoMessage, message_classes, proto_messages
from consumers.producer import as_floats
from consumers.topics import TOPICS

_json_text = msgspec.json.Encoder(decimal_format="number")
REGISTRY_URL = os.environ.get("CIE_SCHEMA_REGISTRY_URL",
                              "http://127.0.0.1:18081/apis/ccompat/v7")
# what the producers use: the version `cie contracts register` registered, never their own
USE_REGISTERED = {"auto.register.schemas": False, "use.latest.version": True}


def avro_dict(event: Any) -> dict[str, Any]:
    """``event`` as a producer hands it to an AvroSerializer: decimals as Decimal, times as
    datetime, free-form fields as JSON text, a union member named (fastavro's ``-type``)."""
    free_form = free_form_fields(type(event)).get(type(event), ())
    record = msgspec.to_builtins(event, builtin_types=(Decimal, UUID, datetime, date))
    for name in free_form:
        if record.get(name) is not None:
            record[name] = _json_text.encode(getattr(event, name)).decode()
    tag = type(event).__struct_config__.tag
    if isinstance(tag, str):
        record["-type"] = f"cie.contracts.{type(event).__name__}"
    return {k: str(v) if isinstance(v, UUID) else v for k, v in record.items()}


def json_dict(event: Any) -> dict[str, Any]:
    """``event`` as a producer hands it to a JSONSerializer: decimals as strings in plain
    notation (the schema's pattern), numbers in free-form fields as floats."""
    record: dict[str, Any] = msgspec.to_builtins(event, builtin_types=(Decimal,))
    return {k: format(v, "f") if isinstance(v, Decimal) else as_floats(v)
            for k, v in record.items()}


Serialize = Callable[[Any, SerializationContext], bytes]


def proto_message(event: Any) -> Message:
    """``event`` as a Protobuf producer builds it from the classes of the registered .proto:
    decimals, times and UUIDs as text, free-form fields as JSON text, null fields unset."""
    spec, cls = _PROTO_CLASSES[type(event)]
    values: dict[str, Any] = {}
    for field in spec.fields:
        value = getattr(event, field.name)
        if value is None:
            continue
        if field.type_name == "string" and not isinstance(value, str):
            value = (format(value, "f") if isinstance(value, Decimal)
                     else value.isoformat() if isinstance(value, datetime | date)
                     else str(value) if isinstance(value, UUID)
                     else _json_text.encode(value).decode())
        values[field.name] = value
    return cls(**values)


def _proto_classes() -> dict[type, tuple[ProtoMessage, type[Message]]]:
    found: dict[type, tuple[ProtoMessage, type[Message]]] = {}
    for topic in TOPICS:
        messages = proto_messages(topic.contract)
        for spec, cls in zip(messages, message_classes(messages), strict=True):
            found[spec.contract] = (spec, cls)
    return found


_PROTO_CLASSES = _proto_classes()


def serializer(fmt: str, schema_text: str, client: SchemaRegistryClient, *,
               latest: bool = True, extra: dict[str, Any] | None = None,
               kind: type | None = None) -> Serialize:
    """confluent-kafka's serializer of ``fmt`` ("avro", "protobuf" or "json") for a registered
    schema (``client``: ``registry_client()``, closed by the caller). ``latest``: write with
    the subject's latest version, as a producer built against it; else with ``schema_text``'s
    own version (an older producer). ``extra``: fields the contract does not have. ``kind``:
    Protobuf, the contract class its messages are (one serializer a message type)."""
    conf = USE_REGISTERED if latest else {**USE_REGISTERED, "use.latest.version": False}
    if fmt == "protobuf":
        # confluent-kafka's Python Protobuf serializer reads a registered schema only as a
        # serialized descriptor (`?format=serialized`), which Apicurio does not serve: it
        # registers its own descriptor instead, a version the subject's rule checks
        assert kind is not None
        proto = ProtobufSerializer(_PROTO_CLASSES[kind][1], client,
                                   {"auto.register.schemas": True})
        return lambda event, ctx: cast(bytes, proto(proto_message(event), ctx))
    to_dict = avro_dict if fmt == "avro" else json_dict
    if fmt == "avro":
        return cast(Serialize, AvroSerializer(
            client, schema_text, lambda e, ctx: {**to_dict(e), **(extra or {})}, conf))
    return cast(Serialize, JSONSerializer(
        schema_text, client, lambda e, ctx: {**to_dict(e), **(extra or {})}, conf))


def registry_client() -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": REGISTRY_URL})


def produce(kafka: str, messages: Sequence[tuple[str, bytes, Any, Serialize]]) -> list[bytes]:
    """(topic, key, event, serializer) each, in order, with confluent-kafka's producer;
    returns the values sent."""
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
    sent = []
    try:
        for topic, key, event, serialize in messages:
            value = serialize(event, SerializationContext(topic, MessageField.VALUE))
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            sent.append(value)
    finally:
        assert producer.flush(30) == 0, "messages not delivered within 30 s"
    return sent


class Relay:
    """A loopback TCP relay to ``upstream`` (host, port): ``cut`` closes it and every
    connection through it (clients are refused, as when the registry is down), ``restore``
    listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        tasks = {asyncio.create_task(pipe(reader, up_writer)),
                 asyncio.create_task(pipe(up_reader, writer))}
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._writers.difference_update((writer, up_writer))



JAVA_PRODUCER = Path(__file__).parent / "java"


def java_classpath(state: Path) -> str:
    """AvroProducer.java's classpath, resolved by Maven once per pom into ``state``."""
    pom = JAVA_PRODUCER / "pom.xml"
    cached = state / f"classpath-{hashlib.sha256(pom.read_bytes()).hexdigest()[:16]}"
    if not cached.exists():
        state.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                        f"-Dmdep.outputFile={cached}"], check=True, timeout=600)
    return cached.read_text().strip()


def java_lines(bars: Sequence[Any]) -> bytes:
    """Bars as AvroProducer.java reads them: flat JSON, decimals in plain notation."""
    lines = []
    for bar in bars:
        values = msgspec.to_builtins(bar, builtin_types=(Decimal,))
        lines.append(json.dumps({k: format(v, "f") if isinstance(v, Decimal) else v
                                 for k, v in values.items()}))
    return ("\n".join(lines) + "\n").encode()
