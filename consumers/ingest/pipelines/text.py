"""A contract's fast path to a COPY line: decimals checked as text, never built as Decimal.

Producers write decimals in plain notation (``100.25`` or ``"0.05"``), which PostgreSQL's
numeric input reads exactly as written. For such a message the decimal fields are decoded as
their raw JSON text (``msgspec.Raw``), checked all at once by one regular expression built from
the contract's precisions and bounds (``decimal_pattern``, the JSON Schema's own), and copied
into the row's COPY line as they are; every other field is decoded with its contract type as
usual. Building 17 ``Decimal`` objects, checking them and printing them again would be most
of the consumer's time per bar (bench/README.md).

The expression decides only which path a message takes: a message it does not match (exponent
notation, escapes, too many places, out of range, anything at all) is decoded exactly with the
contract by the caller, which accepts it or says precisely why not. So this path may refuse
more than the contract, never less, and what it stores is what the exact path would store.
The one exception: a decimal whose text is longer than ``DECIMAL_TEXT_MAX`` is refused here,
before any expression or ``Decimal`` spends time on it (a hostile megabyte of digits).

MessagePack takes the same path when its decimals are strings (``decode_packed``): they are
decoded as ``str`` and checked by the same expression. A float64 decimal, or anything else,
takes the exact path. So do Protobuf records, their decimals strings (``decode_record``).
Avro has a text path of its own, with its decimals checked as integers (avro_text.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

import msgspec

from consumers.contracts.base import Bound, Contract, decimal_pattern, nullable, unwrapped
from consumers.platform.db import NULL_TEXT, copy_field, datetime_text, escape_text

_NULL = msgspec.Raw(b"null")

# Longer than any decimal a column holds in any notation a producer uses (NUMERIC(20,8) is 22
# characters with sign and point, 24 quoted), with room for leading or trailing zeros.
DECIMAL_TEXT_MAX = 64


class TextDecoder:
    """Message bytes → (event, COPY line) for ``contract``, or None: take the exact path.

    The line's columns are ``columns``: the contract's other fields in declaration order, then
    its decimal fields in declaration order. The event has the contract's field names; its
    decimal fields hold raw JSON text, so it is good for keys and times, not for arithmetic.
    """

    def __init__(self, contract: type[Contract]) -> None:
        if contract.__post_init__ is not Contract.__post_init__:
            raise TypeError(f"{contract.__name__} checks more than its decimals after decoding")
        fields = msgspec.structs.fields(contract)
        decimals = [f for f in fields if f.name in contract.decimals]
        self.columns = text_columns(contract)
        self._plain_text = row_text(contract, self.columns[:len(fields) - len(decimals)])
        self._decimal_names = self.columns[len(fields) - len(decimals):]
        self._decimal_values = _values(self._decimal_names)
        self._text_max = len(decimals) * (DECIMAL_TEXT_MAX + 1)  # with the separators
        self._decoder = msgspec.json.Decoder(msgspec.defstruct(
            f"{contract.__name__}Text",
            [_text_field(f) if f in decimals else _same_field(f) for f in fields],
            kw_only=True, frozen=True))
        self._packed_type = msgspec.defstruct(
            f"{contract.__name__}PackedText",
            [_packed_text_field(f) if f in decimals else _same_field(f) for f in fields],
            kw_only=True, frozen=True)
        self._packed = msgspec.msgpack.Decoder(self._packed_type)
        self._decimals = re.compile("\t".join(
            _decimal_text(*contract.decimals[f.name], contract.bounds.get(f.name, Bound()),
                          nullable=nullable(f))
            for f in decimals).encode())

    def decode(self, value: bytes) -> tuple[Any, str] | None:
        """Raises msgspec.ValidationError for a decimal text past ``DECIMAL_TEXT_MAX``."""
        try:
            event = self._decoder.decode(value)
        except Exception:  # the exact path says what is wrong with it
            return None
        raw = self._decimal_values(event)
        if len(text := b"\t".join(raw)) > self._text_max:  # one test for all of them
            self._refuse_longest(raw)
        # A quote in a JSON value wraps a whole string: without them the expression has one
        # form a field to try instead of two (a third less time). The string "null" must not
        # pass for the null it would then read as.
        if b'"' in text:
            if b'"null"' in text:
                return None
            text = text.replace(b'"', b"")
        if self._decimals.fullmatch(text) is None:
            return None
        text = text.replace(b"null", b"\\N")  # matched: "null" can only be a whole value
        return event, f"{self._plain_text(event)}\t{text.decode()}\n"

    def decode_packed(self, value: bytes) -> tuple[Any, str] | None:
        """``decode`` for MessagePack."""
        try:
            event = self._packed.decode(value)
        except Exception:  # the exact path says what is wrong with it
            return None
        return self._with_texts(event)

    def decode_record(self, record: dict[str, Any]) -> tuple[Any, str] | None:
        """``decode`` for a record read from Protobuf, its decimals as text."""
        try:
            event = msgspec.convert(record, self._packed_type)
        except Exception:  # the exact path says what is wrong with it
            return None
        return self._with_texts(event)

    def _with_texts(self, event: Any) -> tuple[Any, str] | None:
        """The line of an event whose decimals are ``str`` (or None), if they pass."""
        texts = self._decimal_values(event)
        if "null" in texts:  # the string "null" must not pass for the null it would read as
            return None
        text = "\t".join(["null" if t is None else t for t in texts]).encode()
        if len(text) > self._text_max:
            self._refuse_longest(tuple(b"" if t is None else t.encode() for t in texts))
        if self._decimals.fullmatch(text) is None:
            return None
        text = text.replace(b"null", b"\\N")  # matched: "null" can only be a whole value
        return event, f"{self._plain_text(event)}\t{text.decode()}\n"

    def _refuse_longest(self, raw: tuple[bytes, ...]) -> None:
        """Past ``_text_max``, at least one decimal is longer than ``DECIMAL_TEXT_MAX``."""
        length, name = max((len(text), name) for name, text in zip(self._decimal_names, raw,
                                                                    strict=True))
        raise msgspec.ValidationError(
            f"{name}: {length} characters, more than a decimal may have ({DECIMAL_TEXT_MAX})")


def _decimal_text(precision: int, scale: int, bound: Bound, *, nullable: bool) -> str:
    number = decimal_pattern(precision - scale, scale, bound)
    return f"(?:{number}|null)" if nullable else number


def _text_field(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.required:
        return (field.name, msgspec.Raw)
    default = field.default
    if default is not None and not isinstance(default, Decimal):
        raise TypeError(f"{field.name}: a decimal's default must be a Decimal or None")
    return (field.name, msgspec.Raw, _NULL if default is None else msgspec.Raw(
        str(default).encode()))


def _packed_text_field(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.required:
        return (field.name, str | None if nullable(field) else str)
    default = field.default  # a Decimal or None, as _text_field checked
    return (field.name, str | None, None if default is None else str(default))


def _same_field(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.required:
        return (field.name, field.type)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, field.type, msgspec.field(default_factory=field.default_factory))
    return (field.name, field.type, field.default)


def text_columns(contract: type[Contract]) -> tuple[str, ...]:
    """The columns of a ``TextDecoder(contract)`` line: the other fields, then the decimals."""
    fields = msgspec.structs.fields(contract)
    return (*(f.name for f in fields if f.name not in contract.decimals),
            *(f.name for f in fields if f.name in contract.decimals))


def row_text(struct: type[msgspec.Struct], names: Sequence[str]) -> Callable[[Any], str]:
    """The function writing a Struct's ``names`` fields as ``copy_line`` does, tab-separated,
    without the line's end. Compiled once per contract into one f-string, the way
    ``dataclasses`` builds its methods: ``copy_line``'s lookup by type, a function call a
    value, took a fifth of a bar's decoding (2.2 us against 0.7 us here)."""
    fields = {field.name: field for field in msgspec.structs.fields(struct)}
    texts = [_field_text(fields[name]) for name in names]
    source = "def row_text(event):\n    return f'" + "\\t".join(texts) + "'\n"
    namespace: dict[str, Any] = {"NULL": NULL_TEXT, "escape_text": escape_text,
                                 "datetime_text": datetime_text, "copy_field": copy_field}
    # the source holds the contract's field names only, which are Python identifiers
    exec(compile(source, f"<COPY text of {struct.__name__}>", "exec"), namespace)  # noqa: S102
    function: Callable[[Any], str] = namespace["row_text"]
    return function


def _field_text(field: msgspec.structs.FieldInfo) -> str:
    """One field's COPY text as an f-string replacement field, by its contract type (as
    ``copy_field`` writes it)."""
    value = f"event.{field.name}"
    inspected, may_be_null = unwrapped(msgspec.inspect.type_info(field.type))
    may_be_null = may_be_null or nullable(field)
    if isinstance(inspected, msgspec.inspect.LiteralType) and all(
            isinstance(v, str) and escape_text(v) == v for v in inspected.values):
        text = value  # one of its words
    elif isinstance(inspected, msgspec.inspect.IntType):
        text = value  # its digits
    elif isinstance(inspected, msgspec.inspect.StrType):
        text = f"escape_text({value})"
    elif isinstance(inspected, msgspec.inspect.DateTimeType):
        text = f"datetime_text({value})"
    elif isinstance(inspected, msgspec.inspect.DecimalType):
        text = f"str({value})"  # exact
    elif isinstance(inspected, msgspec.inspect.UUIDType):
        text = f"{value}.hex"
    else:
        return f"{{copy_field({value})}}"  # None included
    return f"{{NULL if {value} is None else {text}}}" if may_be_null else f"{{{text}}}"


def _values(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """attrgetter that always returns a tuple (it returns a bare value for one name)."""
    if len(names) == 1:
        return lambda event: (getattr(event, names[0]),)
    return attrgetter(*names)
