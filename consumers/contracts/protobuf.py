"""A contract as a Protobuf schema (proto3), for producers that serialize Protobuf through a
schema registry; and the message classes that read it.

Generated from the same msgspec contract as the Avro and JSON Schemas. Field numbers follow
the contract's declaration order, so a field a contract adds later is appended and gets the
next number (never reuse or reorder one). The mapping keeps values exact and the file free of
imports:
- decimals, timestamps (RFC 3339 with an offset), dates and UUIDs are strings, read by the
  same rules as their JSON text;
- a free-form field (a feature vector, a payload) is a string holding its JSON text;
- a field that may be null or has a default is ``optional`` (absent: null, or the default);
- the improvement events' tagged union is one message per kind, in the union's order: the
  message index a registry serializer writes in front of the payload names the kind.
Ingest reads a registered Protobuf schema's messages with these classes (ingest/schemas.py):
the registry vouches for the subject, the field numbers for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from consumers.contracts.base import Contract, unwrapped
from consumers.contracts.free_form import free_form_fields

PACKAGE = "cie.contracts"
_Field = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[type, tuple[int, str]] = {
    msgspec.inspect.IntType: (_Field.TYPE_INT64, "int64"),
    msgspec.inspect.BoolType: (_Field.TYPE_BOOL, "bool"),
    msgspec.inspect.FloatType: (_Field.TYPE_DOUBLE, "double"),
}
_STRING = (_Field.TYPE_STRING, "string")


@dataclass(frozen=True)
class ProtoField:
    name: str
    number: int
    proto_type: int  # a FieldDescriptorProto.TYPE_*
    type_name: str  # as .proto text writes it
    optional: bool  # explicit presence: absent means null or the contract's default


@dataclass(frozen=True)
class ProtoMessage:
    contract: type[Contract]
    tag_field: str | None
    tag: str | None
    fields: tuple[ProtoField, ...]


def proto_messages(event_type: Any) -> tuple[ProtoMessage, ...]:
    """The messages of a contract's schema, in the order a message index counts them."""
    info = msgspec.inspect.type_info(event_type)
    structs = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return tuple(_message(s) for s in structs if isinstance(s, msgspec.inspect.StructType))


def _message(struct: msgspec.inspect.StructType) -> ProtoMessage:
    contract = cast(type[Contract], struct.cls)
    free_form = set(free_form_fields(contract).get(contract, ()))
    fields = []
    for number, field in enumerate(struct.fields, start=1):
        inspected, nullable = unwrapped(field.type)
        proto_type, type_name = _STRING if field.name in free_form else _SCALARS.get(
            type(inspected), _STRING)
        fields.append(ProtoField(field.name, number, proto_type, type_name,
                                 optional=nullable or not field.required))
    tag = struct.tag if isinstance(struct.tag, str) else None
    return ProtoMessage(contract, struct.tag_field, tag, tuple(fields))


def proto_schema_text(event_type: Any) -> str:
    """The schema as a .proto file, what `cie contracts register --format protobuf` registers."""
    lines = ['syntax = "proto3";', f"package {PACKAGE};", ""]
    for msg in proto_messages(event_type):
        lines.append(f"message {msg.contract.__name__} {{")
        lines.extend(f"  {'optional ' if f.optional else ''}{f.type_name} {f.name} = {f.number};"
                     for f in msg.fields)
        lines.extend(["}", ""])
    return "\n".join(lines)


class ProtoReader:
    """Reads one contract's Protobuf messages into dicts of its field names (free-form fields
    still JSON text: free_form.parse_texts)."""

    def __init__(self, event_type: Any) -> None:
        self._messages = proto_messages(event_type)
        self._classes = message_classes(self._messages)

    def read(self, indexes: Sequence[int], payload: bytes) -> dict[str, Any]:
        """The message ``indexes`` names (Confluent's message index), decoded. Raises
        msgspec.DecodeError for bytes that are not that message."""
        if len(indexes) != 1 or not 0 <= indexes[0] < len(self._classes):
            raise msgspec.DecodeError(f"message index {list(indexes)}: the schema has "
                                      f"{len(self._classes)} top-level messages")
        spec, cls = self._messages[indexes[0]], self._classes[indexes[0]]
        try:
            decoded = cls.FromString(payload)
        except message.DecodeError as exc:
            raise msgspec.DecodeError(f"not Protobuf of {spec.contract.__name__}: {exc}") \
                from None
        record: dict[str, Any] = {}
        for field in spec.fields:
            if field.optional and not decoded.HasField(field.name):
                continue
            record[field.name] = getattr(decoded, field.name)
        if spec.tag_field is not None:
            record[spec.tag_field] = spec.tag
        return record


def message_classes(messages: Sequence[ProtoMessage]) -> list[type[message.Message]]:
    """Message classes built from the same field list as the .proto text, in a pool of
    their own (no protoc, no generated code)."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"cie/{messages[0].contract.__name__}.proto", package=PACKAGE, syntax="proto3")
    for msg in messages:
        proto = file.message_type.add(name=msg.contract.__name__)
        for field in msg.fields:
            added = proto.field.add(name=field.name, number=field.number, type=field.proto_type,
                                    label=_Field.LABEL_OPTIONAL)
            if field.optional:  # proto3 `optional`: a synthetic one-field oneof
                added.proto3_optional = True
                added.oneof_index = len(proto.oneof_decl)
                proto.oneof_decl.add(name=f"_{field.name}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    found = pool.FindFileByName(file.name)
    return [message_factory.GetMessageClass(found.message_types_by_name[m.contract.__name__])
            for m in messages]

