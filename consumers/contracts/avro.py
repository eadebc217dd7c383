"""A contract as an Avro schema, for producers that serialize Avro through a schema registry.

Generated from the same msgspec contract as the JSON Schema (base.contract_schema), so there
is one definition. The mapping:
- a decimal field is Avro's ``decimal`` (bytes) with its column's precision and scale, exact;
- a timestamp is ``timestamp-micros`` (UTC), a date ``date``, a UUID a ``uuid`` string;
- text, and a choice of words (``side``, ``detected_regime``), is a string: the contract's
  limits and choices are checked when the message is decoded, as for JSON;
- a free-form field (a feature vector, a payload) is a string holding its JSON text: Avro has
  no type for "any JSON", and the JSON is held to the same limits (free_form.parse_texts);
- an optional field is a union with null, default null; a field with a default keeps it;
- the improvement events' tagged union is a union of records, each with its ``type`` field
  defaulting to its tag.
Every field a contract adds later has a default, so the registry's BACKWARD check passes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import msgspec

from consumers.contracts.base import Contract, unwrapped
from consumers.contracts.free_form import free_form_fields

NAMESPACE = "cie.contracts"


def avro_schema(event_type: Any) -> Any:
    """The Avro schema (as JSON-ready Python values) of a contract or a tagged union of them."""
    info = msgspec.inspect.type_info(event_type)
    if isinstance(info, msgspec.inspect.UnionType):
        return [_record(t) for t in info.types if isinstance(t, msgspec.inspect.StructType)]
    assert isinstance(info, msgspec.inspect.StructType)
    return _record(info)


def avro_schema_text(event_type: Any) -> str:
    return json.dumps(avro_schema(event_type), separators=(",", ":"))


def _record(struct: msgspec.inspect.StructType) -> dict[str, Any]:
    contract = cast(type[Contract], struct.cls)
    free_form = set(free_form_fields(contract).get(contract, ()))
    fields: list[dict[str, Any]] = []
    if struct.tag_field is not None:
        fields.append({"name": struct.tag_field, "type": "string", "default": struct.tag})
    for field in struct.fields:
        if field.name in free_form:
            avro_type: Any = "string"
            nullable = True
        else:
            inspected, nullable = unwrapped(field.type)
            avro_type = _type(contract, field.name, inspected)
        entry: dict[str, Any] = {"name": field.name}
        if nullable:
            entry["type"] = ["null", avro_type]
            if not field.required:
                entry["default"] = None if field.default in (None, msgspec.NODEFAULT) \
                    else _default(avro_type, field.default, contract, field.name)
                if entry["default"] is not None:  # a union's default is of its first branch
                    entry["type"] = [avro_type, "null"]
        else:
            entry["type"] = avro_type
            if not field.required:
                entry["default"] = _default(avro_type, field.default, contract, field.name)
        fields.append(entry)
    return {"type": "record", "name": contract.__name__, "namespace": NAMESPACE,
            "fields": fields}


def _type(contract: type[Contract], name: str, inspected: msgspec.inspect.Type) -> Any:
    """The Avro type of one field's (unwrapped) type."""
    match inspected:
        case msgspec.inspect.DecimalType():
            precision, scale = contract.decimals[name]
            return {"type": "bytes", "logicalType": "decimal", "precision": precision,
                    "scale": scale}
        case msgspec.inspect.DateTimeType():
            return {"type": "long", "logicalType": "timestamp-micros"}
        case msgspec.inspect.DateType():
            return {"type": "int", "logicalType": "date"}
        case msgspec.inspect.UUIDType():
            return {"type": "string", "logicalType": "uuid"}
        case msgspec.inspect.StrType() | msgspec.inspect.LiteralType():
            return "string"
        case msgspec.inspect.BoolType():
            return "boolean"
        case msgspec.inspect.IntType():
            return "long"
        case msgspec.inspect.FloatType():
            return "double"
    raise TypeError(f"{contract.__name__}.{name}: no Avro type for {inspected}")


def _default(avro_type: Any, value: Any, contract: type[Contract], name: str) -> Any:
    """``value`` as Avro writes a default of ``avro_type`` in a schema."""
    if isinstance(value, Decimal):
        _, scale = contract.decimals[name]
        unscaled = int(value.scaleb(scale))
        size = max(1, (unscaled.bit_length() + 8) // 8)  # two's complement, with a sign bit
        return unscaled.to_bytes(size, "big", signed=True).decode("latin-1")
    if isinstance(value, bool | int | str):
        return value
    raise TypeError(f"{contract.__name__}.{name}: no Avro default for {value!r} of {avro_type}")
