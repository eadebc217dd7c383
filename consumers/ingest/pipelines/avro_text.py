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

import re
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import msgspec

from consumers.contracts.base import Bound, Contract, nullable, unwrapped
from consumers.platform.db import NULL_TEXT, copy_field, copy_line, escape_text

Read = Callable[[bytes], "tuple[Any, str] | None"]
# The size a decimal's length byte gives: a one-byte zigzag varint is 2n for n bytes. Any other
# byte (a longer or negative length) sends the reader past the payload's end, where its next
# read, or its last check, fails: one lookup instead of a test and two sums a decimal.
_SIZE = tuple(n >> 1 if n < 0x80 and not n & 1 else 1 << 62 for n in range(256))


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
        source = _Source(contract)
        text = "\n".join(source.function(writer))
    except (_NotRead, KeyError, TypeError, ValueError):  # a shape fastavro let through
        return None
    namespace: dict[str, Any] = {
        "convert": msgspec.convert, "copy_line": copy_line, "copy_field": copy_field,
        "astuple": msgspec.structs.astuple, "long": zigzag_varint, "micros8": _micros8,
        "micros": _from_micros, "millis": _from_millis, "unpack": struct.unpack_from,
        "NULL": NULL_TEXT, "Plain": _plain_struct(contract), "SIZE": _SIZE, **source.namespace}
    # the source holds the contract's names and numbers only (_var): no text of the schema's
    exec(compile(text, f"<Avro reader for {contract.__name__}>", "exec"), namespace)  # noqa: S102
    return AvroTextReader(cast(Read, namespace["read"]), text)


class _NotRead(Exception):
    """The schema has something a reader does not read."""


class _Source:
    """The lines of one reader's function, for ``contract``."""

    def __init__(self, contract: type[Contract]) -> None:
        if set(contract.bounds) - set(contract.decimals):
            raise _NotRead("bounds on a field that is not a decimal")
        self.contract = contract
        self.fields = msgspec.structs.fields(contract)
        self.scales: dict[str, int] = {}  # of each decimal's text: the writer's
        self.texts: dict[str, str] = {}  # other fields' COPY text, as an expression
        self.checks: dict[str, list[str]] = {}  # the lines checking them, where written out
        self.namespace: dict[str, Any] = {}  # what those lines use (patterns, word sets)

    def function(self, writer: Any) -> Iterator[str]:
        if not isinstance(writer, dict) or writer.get("type") != "record":
            raise _NotRead("not a record")
        # what it calls, bound as defaults: a local is found faster than a global
        yield ("def read(buf, convert=convert, copy_line=copy_line, copy_field=copy_field, "
               "astuple=astuple, from_bytes=int.from_bytes, long=long, micros8=micros8, "
               "micros=micros, millis=millis, unpack=unpack, NULL=NULL, Plain=Plain, SIZE=SIZE):")
        yield "    pos = 0"
        for field in writer["fields"]:
            yield from self._field(field["name"], field["type"])
        yield "    if pos != len(buf):"
        yield "        return None"
        written = {field["name"] for field in writer["fields"]}
        for field in (f for f in self.fields if f.name not in written):  # a newer contract's
            yield from self._default(field)
        plain = [f.name for f in self.fields if f.name not in self.contract.decimals]
        decimals = [f.name for f in self.fields if f.name in self.contract.decimals]
        values = ", ".join(self._var(n) for n in plain)
        checked = all(n in self.checks for n in plain)
        if checked:  # the contract's checks written out: a third of convert's time
            for name in plain:
                yield from self.checks[name]
            yield f"    event = Plain({values})"
        else:
            yield f"    event = convert([{values}], Plain)"
        # the decimals' texts in one format, which a null among them fails
        every = "\t".join(self._notation(n) for n in decimals)
        each = ", ".join(f"NULL if {self._var(n)} is None else {self._notation(n)!r} % "
                         f"{self._var(n)}" for n in decimals)
        yield "    try:"
        yield f"        texts = {every!r} % ({', '.join(self._var(n) for n in decimals)},)"
        yield "    except TypeError:"
        yield f"        texts = '\\t'.join([{each}])"
        if checked:
            line = "\\t".join(f"{{{self.texts[n]}}}" for n in plain)
        else:  # a value the check changed (a string that is a time): the checked one's text
            line = "{copy_line(astuple(event))[:-1]}"
        yield f"    return event, f'{line}\\t{{texts}}\\n'"

    def _field(self, name: str, avro_type: Any) -> Iterator[str]:
        """The lines that read one field into its variable (or past it, if the contract has
        no such field)."""
        yield f"    # {name}" if name in self.contract.__struct_fields__ \
            else "    # not the contract's"
        if not isinstance(avro_type, list):
            yield from self._value(name, avro_type, "    ")
            return
        if len(avro_type) != 2 or "null" not in avro_type:
            raise _NotRead(f"{name}: a union other than with null")
        null = avro_type.index("null")
        # a union's branch is a zigzag varint: 0 is written 0, and 1 is written 2
        yield f"    if buf[pos] == {2 * (1 - null)}:"
        yield "        pos += 1"
        yield from self._value(name, avro_type[1 - null], "        ")
        yield f"    elif buf[pos] == {2 * null}:"
        yield "        pos += 1"
        if name in self.contract.decimals and not nullable(self._contract_field(name)):
            yield "        return None"  # the exact path refuses it, and says why
        else:
            yield f"        {self._var(name)} = None"
            if self.texts.get(name) == f"t{self._var(name)}":  # a time's text
                yield f"        t{self._var(name)} = NULL"
        yield "    else:"
        yield "        return None"

    def _value(self, name: str, avro_type: Any, indent: str) -> Iterator[str]:
        var = self._var(name)
        kind = avro_type
        if isinstance(avro_type, dict):
            kind = avro_type.get("logicalType") or avro_type.get("type")
        if kind == "decimal" and avro_type.get("type") == "bytes":
            lines = self._decimal(name, avro_type)
        elif name in self.contract.decimals:
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
            self._plain(name, kind)
        elif kind == "timestamp-micros":  # eight bytes hold any time from 1978 to 2540
            lines = ["time = micros8(buf[pos:pos + 8])", "if time is None:",
                     "    value, pos = long(buf, pos)", "    time = micros(value)", "else:",
                     "    pos += 8", f"{var}, t{var} = time"]
            self._plain(name, kind)
        elif kind == "timestamp-millis":
            lines = ["value, pos = long(buf, pos)", f"{var}, t{var} = millis(value)"]
            self._plain(name, kind)
        elif kind == "boolean":
            lines = ["if buf[pos] > 1:", "    return None", f"{var} = buf[pos] == 1",
                     "pos += 1"]
            self._plain(name, kind)
        elif kind in ("double", "float"):
            code, size = ("<d", 8) if kind == "double" else ("<f", 4)
            lines = [f"{var} = unpack('{code}', buf, pos)[0]", f"pos += {size}"]
        else:
            raise _NotRead(f"{name}: {kind}")
        yield from (indent + line for line in lines)

    def _decimal(self, name: str, avro_type: dict[str, Any]) -> list[str]:
        """Read a decimal's unscaled bytes and check that it fits its column: no more places
        than its scale, fewer integer digits than its precision allows, within its bound. A
        decimal the contract does not have is read past."""
        # A length is a zigzag varint: 2n in one byte for up to 63 bytes (DECIMAL(38): 16).
        lines = ["start = pos + 1", "pos = start + SIZE[buf[pos]]"]
        if name not in self.contract.decimals:
            return lines
        precision, scale = self.contract.decimals[name]
        written_scale = int(avro_type.get("scale", 0))
        if not 0 <= written_scale <= scale:
            raise _NotRead(f"{name}: scale {written_scale}, the column's is {scale}")
        self.scales[name] = written_scale
        low, high = _unscaled_range(precision - scale, written_scale,
                                    self.contract.bounds.get(name, Bound()))
        var = self._var(name)
        return [*lines, f"{var} = from_bytes(buf[start:pos], 'big', signed=True)",
                f"if not {low} <= {var} <= {high}:", "    return None"]

    def _default(self, field: msgspec.structs.FieldInfo) -> Iterator[str]:
        """A contract field the writer's schema does not have: its default (a decimal's
        unscaled at the column's scale), or no reader: the exact path refuses each message."""
        if field.required or field.default_factory is not msgspec.NODEFAULT:
            raise _NotRead(f"{field.name}: not in the schema")
        default = field.default
        if field.name in self.contract.decimals:
            _, self.scales[field.name] = self.contract.decimals[field.name]
            if default is not None:
                default = int(default.scaleb(self.scales[field.name]))
        elif default is not None and not isinstance(default, bool | int | str):
            raise _NotRead(f"{field.name}: a default of {type(default).__name__}")
        else:  # the contract's own default: nothing to check
            self.checks[field.name] = []
            self.texts[field.name] = f"copy_field({self._var(field.name)})"
        yield f"    {self._var(field.name)} = {default!r}"

    def _plain(self, name: str, kind: str) -> None:
        """How a field read as ``kind`` goes into the line, and how it is checked: by the
        contract's constraints on its type, written out, where it is read as that type (a
        string as a string, not as a UUID or a time; a long as an integer). Otherwise its
        line text is the checked value's, and msgspec.convert checks it."""
        if name not in self.contract.__struct_fields__:
            return
        field = self._contract_field(name)
        inspected, _ = unwrapped(msgspec.inspect.type_info(field.type))
        var, may_be_null = self._var(name), nullable(field)
        condition = self._condition(var, kind, inspected)
        if condition is None:
            return
        self.checks[name] = [f"    if {var} is not None and not ({condition}):" if may_be_null
                             else f"    if {var} is None or not ({condition}):",
                             "        return None"]
        if kind.startswith("timestamp"):
            self.texts[name] = f"t{var}"
        elif isinstance(inspected, msgspec.inspect.LiteralType) and all(
                isinstance(v, str) and escape_text(v) == v for v in inspected.values):
            self.texts[name] = f"NULL if {var} is None else {var}"  # one of its words
        elif isinstance(inspected, msgspec.inspect.IntType) and not may_be_null:
            self.texts[name] = var  # its digits
        else:
            self.texts[name] = f"copy_field({var})"

    def _condition(self, var: str, kind: str, inspected: msgspec.inspect.Type) -> str | None:
        """What a non-null value of ``inspected`` read as ``kind`` must meet (msgspec's own
        rules for those constraints), or None if it is not checked here."""
        match inspected:
            case msgspec.inspect.StrType() if kind == "string":
                parts = []
                if inspected.min_length is not None:
                    parts.append(f"len({var}) >= {inspected.min_length}")
                if inspected.max_length is not None:
                    parts.append(f"len({var}) <= {inspected.max_length}")
                if inspected.pattern is not None:  # msgspec searches, as re.search does
                    self.namespace[f"P{var}"] = re.compile(inspected.pattern).search
                    parts.append(f"P{var}({var}) is not None")
                return " and ".join(parts) or "True"
            case msgspec.inspect.LiteralType() if kind == "string" and all(
                    isinstance(v, str) for v in inspected.values):
                self.namespace[f"L{var}"] = frozenset(inspected.values)
                return f"{var} in L{var}"
            case msgspec.inspect.IntType() if kind in ("long", "int") \
                    and inspected.multiple_of is None:
                bounds = [(inspected.ge, ">="), (inspected.gt, ">"), (inspected.le, "<="),
                          (inspected.lt, "<")]
                return " and ".join(f"{var} {op} {bound}" for bound, op in bounds
                                    if bound is not None) or "True"
            case msgspec.inspect.BoolType() if kind == "boolean":
                return "True"
            case msgspec.inspect.DateTimeType() if kind.startswith("timestamp") \
                    and inspected.tz is not False:  # the time read is in UTC
                return "True"
        return None

    def _notation(self, name: str) -> str:
        scale = self.scales[name]
        return f"%de-{scale}" if scale else "%d"

    def _contract_field(self, name: str) -> msgspec.structs.FieldInfo:
        return next(f for f in self.fields if f.name == name)

    def _var(self, name: str) -> str:
        """The variable holding a field: named by its place in the contract, so no text from
        the writer's schema (which the registry serves, and a producer wrote) reaches the
        source."""
        fields = self.contract.__struct_fields__
        return f"f{fields.index(name)}" if name in fields else "skipped"


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


def _plain_struct(contract: type[Contract]) -> type[msgspec.Struct]:
    """The contract's fields other than its decimals, with their types, read from a list: what
    checks them."""
    fields = [(f.name, f.type) for f in msgspec.structs.fields(contract)
              if f.name not in contract.decimals]
    return msgspec.defstruct(f"{contract.__name__}Plain", fields, array_like=True, frozen=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_micros(value: int) -> tuple[datetime, str]:
    """A time and its COPY text."""
    time = _EPOCH + timedelta(0, 0, value)  # positional: half the time of microseconds=
    return time, copy_field(time)


def _from_millis(value: int) -> tuple[datetime, str]:
    time = _EPOCH + timedelta(0, 0, 0, value)
    return time, copy_field(time)


# A bar's time is usually the previous one's (every symbol's bar of a minute in turn): a hit
# costs a tenth of reading the varint and making the time and its text again.
@lru_cache(maxsize=4096)
def _micros8(raw: bytes) -> tuple[datetime, str] | None:
    """``_from_micros`` of a ``timestamp-micros`` written in the eight bytes ``raw``, or None
    if they are not one varint. Its 7-bit groups are gathered with masks and shifts."""
    value = int.from_bytes(raw, "little")
    if len(raw) != 8 or value & 0x8080808080808080 != 0x0080808080808080:
        return None  # not seven bytes that go on, then one that ends
    value &= 0x7F7F7F7F7F7F7F7F
    value = (value & 0x007F007F007F007F) | ((value & 0x7F007F007F007F00) >> 1)
    value = (value & 0x00003FFF00003FFF) | ((value & 0x3FFF00003FFF0000) >> 2)
    value = (value & 0x000000000FFFFFFF) | ((value & 0x0FFFFFFF00000000) >> 4)
    return _from_micros((value >> 1) ^ -(value & 1))


def zigzag_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``buf[pos:]`` (at most 10 bytes), and the position after it: an
    Avro int or long, or an index in Confluent's Protobuf framing (schemas.py). IndexError if
    cut short, ValueError if longer."""
    byte = buf[pos]
    result, shift = byte & 0x7F, 7
    while byte & 0x80:
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        shift += 7
    return (result >> 1) ^ -(result & 1), pos + 1
