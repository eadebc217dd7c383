"""An Avro record straight to its COPY line, for the text path: one reader per writer schema.

fastavro reads a bar in about the time msgspec decodes and checks its whole JSON, and then its
17 decimals still had to be written as text and the contract checked: three to four times a
JSON bar's cost (bench/README.md, "Wire formats"). For a flat record, this module writes the
Python source of one function that walks the payload field by field, checks each decimal as an
integer against its column's precision and bounds, writes it as ``<unscaled>e-<scale>`` (which
PostgreSQL's numeric input reads exactly), checks the other fields with the contract's own
types (``msgspec.convert``) and returns the event and its line. The source is compiled once per
schema and contract, the way ``dataclasses`` builds its methods: a loop over field descriptions
would spend more time dispatching than reading.

What a reader reads: fields of type string, long, int, boolean, float, double, ``decimal``
bytes (at most the column's scale), ``uuid`` and ``timestamp-micros`` or ``-millis``, each
optionally in a union with null. A schema with any other field gets no reader, and its
messages take the exact path (fastavro and the contract). Like the JSON text path, a reader
may leave a message to the exact path (it returns None: a cut payload, a value out of range, a
decimal longer than 63 bytes) and the exact path then says what is wrong with it; it never
accepts what the exact path refuses, and what it stores the exact path stores alike
(tests/unit/test_avro_text.py). ``AvroTextReader.source`` shows the function.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec

from consumers.contracts.base import Bound, Contract, nullable
from consumers.platform.db import copy_line

Read = Callable[[bytes], "tuple[Any, str] | None"]
_NULL = "\\N"  # COPY text's null


class AvroTextReader:
    """Payload → (event, COPY line) for one writer schema and ``contract``, or None: take the
    exact path. The line's columns are ``text_columns(contract)``; the event has the contract's
    fields other than its decimals (enough for keys and times)."""

    def __init__(self, read: Read, source: str) -> None:
        self._read = read
        self.source = source

    def read(self, payload: bytes) -> tuple[Any, str] | None:
        try:
            return self._read(payload)
        except Exception:  # cut short, bad UTF-8, a time out of range: the exact path says
            return None


def avro_text_reader(writer: Any, contract: type[Contract]) -> AvroTextReader | None:
    """The reader of ``writer`` (an Avro schema as parsed JSON) for ``contract``, or None if
    the schema is not a flat record of the types above."""
    try:
        source = "\n".join(_function(writer, contract))
    except _NotRead:
        return None
    namespace: dict[str, Any] = {"convert": msgspec.convert, "astuple": msgspec.structs.astuple,
                 "copy_line": copy_line, "from_bytes": int.from_bytes, "long": _long,
                 "micros": _from_micros, "millis": _from_millis, "unpack": struct.unpack_from,
                 "NULL": _NULL, "Plain": _plain_struct(contract)}
    # the source holds the contract's names and numbers only (_var): no text of the schema's
    exec(compile(source, f"<Avro reader for {contract.__name__}>", "exec"), namespace)  # noqa: S102
    return AvroTextReader(cast(Read, namespace["read"]), source)


class _NotRead(Exception):
    """The schema has something a reader does not read."""


def _function(writer: Any, contract: type[Contract]) -> Iterator[str]:
    if not isinstance(writer, dict) or writer.get("type") != "record":
        raise _NotRead("not a record")
    if set(contract.bounds) - set(contract.decimals):
        raise _NotRead("bounds on a field that is not a decimal")
    fields = msgspec.structs.fields(contract)
    plain = [f for f in fields if f.name not in contract.decimals]
    decimals = [f for f in fields if f.name in contract.decimals]
    scales = {f.name: contract.decimals[f.name][1] for f in decimals}  # of each one's text
    written = set()
    yield "def read(buf):"
    yield "    pos = 0"
    for field in writer["fields"]:
        written.add(field["name"])
        yield from _field(field, contract, scales)
    yield "    if pos != len(buf):"
    yield "        return None"
    for field in (f for f in fields if f.name not in written):  # a newer contract's fields
        yield f"    {_var(field.name, contract)} = {_default(field, contract)}"
    yield f"    event = convert([{', '.join(_var(f.name, contract) for f in plain)}], Plain)"
    # the decimals' texts in one format, which a null among them fails
    every = "\t".join(_notation(scales[f.name]) for f in decimals)
    each = ", ".join(f"NULL if {_var(f.name, contract)} is None else "
                     f"{_notation(scales[f.name])!r} % {_var(f.name, contract)}" for f in decimals)
    yield "    try:"
    yield f"        texts = {every!r} % ({', '.join(_var(f.name, contract) for f in decimals)},)"
    yield "    except TypeError:"
    yield f"        texts = '\\t'.join([{each}])"
    yield "    return event, f'{copy_line(astuple(event))[:-1]}\\t{texts}\\n'"


def _notation(scale: int) -> str:
    return f"%de-{scale}" if scale else "%d"


def _field(field: dict[str, Any], contract: type[Contract],
           scales: dict[str, int]) -> Iterator[str]:
    """The lines that read one field into its variable (or past it, if the contract has no
    such field)."""
    name, avro_type = field["name"], field["type"]
    yield f"    # {name}" if name in contract.__struct_fields__ else "    # not the contract's"
    if not isinstance(avro_type, list):
        yield from _value(name, avro_type, contract, scales, "    ")
        return
    if len(avro_type) != 2 or "null" not in avro_type:
        raise _NotRead(f"{name}: a union other than with null")
    null = avro_type.index("null")
    # a union's branch is a zigzag varint: 0 is written 0, and 1 is written 2
    yield f"    if buf[pos] == {2 * (1 - null)}:"
    yield "        pos += 1"
    yield from _value(name, avro_type[1 - null], contract, scales, "        ")
    yield f"    elif buf[pos] == {2 * null}:"
    yield "        pos += 1"
    if name in contract.decimals and not nullable(_contract_field(contract, name)):
        yield "        return None"  # the exact path refuses it, and says why
    else:
        yield f"        {_var(name, contract)} = None"
    yield "    else:"
    yield "        return None"


def _value(name: str, avro_type: Any, contract: type[Contract], scales: dict[str, int],
           indent: str) -> Iterator[str]:
    var = _var(name, contract)
    kind = avro_type
    if isinstance(avro_type, dict):
        kind = avro_type.get("logicalType") or avro_type.get("type")
    if kind == "decimal" and avro_type.get("type") == "bytes":
        lines = _decimal(var, avro_type, contract, name, scales)
    elif name in contract.decimals:
        raise _NotRead(f"{name}: a {kind}, not a decimal")
    elif kind in ("string", "uuid", "long", "int"):
        lines = ["value = buf[pos]",  # one byte holds -64..63: most lengths
                 "if value < 128:",
                 "    value = (value >> 1) ^ -(value & 1)",
                 "    pos += 1",
                 "else:",
                 "    value, pos = long(buf, pos)"]
        if kind in ("string", "uuid"):
            lines += ["if value < 0:", "    return None", "end = pos + value",
                      f"{var} = buf[pos:end].decode()", "pos = end"]
        else:
            lines.append(f"{var} = value")
    elif kind in ("timestamp-micros", "timestamp-millis"):
        lines = ["value, pos = long(buf, pos)", f"{var} = {kind[10:]}(value)"]
    elif kind == "boolean":
        lines = ["if buf[pos] > 1:", "    return None", f"{var} = buf[pos] == 1", "pos += 1"]
    elif kind in ("double", "float"):
        code, size = ("<d", 8) if kind == "double" else ("<f", 4)
        lines = [f"{var} = unpack('{code}', buf, pos)[0]", f"pos += {size}"]
    else:
        raise _NotRead(f"{name}: {kind}")
    yield from (indent + line for line in lines)


def _decimal(var: str, avro_type: dict[str, Any], contract: type[Contract], name: str,
             scales: dict[str, int]) -> list[str]:
    """Read a decimal's unscaled bytes and check that it fits its column: no more places than
    its scale, fewer integer digits than its precision allows, within its bound. A decimal
    the contract does not have is read past."""
    # A length is a zigzag varint: 2n in one byte for up to 63 bytes (DECIMAL(38) needs 16).
    lines = ["n = buf[pos]", "if n & 0x81:", "    return None", "start = pos + 1",
             "pos = start + (n >> 1)"]
    if name not in contract.decimals:
        return lines
    precision, scale = contract.decimals[name]
    written_scale = int(avro_type.get("scale", 0))
    if not 0 <= written_scale <= scale:
        raise _NotRead(f"{name}: scale {written_scale}, the column's is {scale}")
    scales[name] = written_scale
    low, high = _unscaled_range(precision - scale, written_scale,
                                contract.bounds.get(name, Bound()))
    return [*lines, f"{var} = from_bytes(buf[start:pos], 'big', signed=True)",
            f"if not {low} <= {var} <= {high}:", "    return None"]


def _unscaled_range(integer_digits: int, scale: int, bound: Bound) -> tuple[int, int]:
    """The unscaled integers, at ``scale``, of the values the column and ``bound`` allow."""
    unit = 10 ** scale
    high = 10 ** integer_digits * unit - 1
    low = -high
    if bound.low is not None:
        floor = bound.low * unit
        if floor != int(floor):
            raise _NotRead(f"a bound ({bound.low}) finer than the scale")
        low = max(low, int(floor) + (1 if bound.low_exclusive else 0))
    if bound.high is not None:
        ceiling = bound.high * unit
        if ceiling != int(ceiling):
            raise _NotRead(f"a bound ({bound.high}) finer than the scale")
        high = min(high, int(ceiling))
    return low, high


def _default(field: msgspec.structs.FieldInfo, contract: type[Contract]) -> str:
    """A contract field the writer's schema does not have: its default (a decimal's unscaled
    at the column's scale), or no reader: the exact path refuses the message for it."""
    if field.required or field.default_factory is not msgspec.NODEFAULT:
        raise _NotRead(f"{field.name}: not in the schema")
    default = field.default
    if field.name in contract.decimals and default is not None:
        return repr(int(default.scaleb(contract.decimals[field.name][1])))
    if default is None or isinstance(default, bool | int | str):
        return repr(default)
    raise _NotRead(f"{field.name}: a default of {type(default).__name__}")


def _contract_field(contract: type[Contract], name: str) -> msgspec.structs.FieldInfo:
    return next(f for f in msgspec.structs.fields(contract) if f.name == name)


def _var(name: str, contract: type[Contract]) -> str:
    """The variable holding a field: named by its place in the contract, so no text from the
    writer's schema (which the registry serves, and a producer wrote) reaches the source."""
    fields = contract.__struct_fields__
    return f"f{fields.index(name)}" if name in fields else "skipped"


def _plain_struct(contract: type[Contract]) -> type[msgspec.Struct]:
    """The contract's fields other than its decimals, with their types, read from a list: what
    checks them."""
    fields = [(f.name, f.type) for f in msgspec.structs.fields(contract)
              if f.name not in contract.decimals]
    return msgspec.defstruct(f"{contract.__name__}Plain", fields, array_like=True, frozen=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(0, 0, value)  # positional: half the time of microseconds=


def _from_millis(value: int) -> datetime:
    return _EPOCH + timedelta(0, 0, 0, value)


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``buf[pos:]`` (at most 10 bytes), and the position after it."""
    result = shift = 0
    end = min(pos + 10, len(buf))
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    raise ValueError("a varint cut short or longer than 10 bytes")
