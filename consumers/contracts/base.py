"""Building blocks for the wire contracts: constrained aliases and exact decimal checks.

Every event type is a frozen ``msgspec.Struct`` subclassing ``Contract``. Strings carry their
column's ``VARCHAR(n)`` as ``max_length``; timestamps must carry an offset; decimals decode
exactly (msgspec reads JSON numbers and strings into ``Decimal`` without a float in between)
and ``Contract.__post_init__`` rejects a value that does not fit its column's ``DECIMAL(p, s)``
instead of letting PostgreSQL round it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, NamedTuple

import msgspec

UtcTime = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 timestamp with an offset",
                           extra_json_schema={"pattern": "(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"})
]
# A pattern's end is "$(?!\n)": msgspec applies it with re.search, where "$" alone also matches
# before a final newline ("AAPL\n" passed as a symbol of its own); in JSON Schema's dialect the
# lookahead changes nothing.
PATTERN_END = r"$(?!\n)"
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=10,
                                     pattern=rf"^[A-Z0-9.\-/]+{PATTERN_END}")]
StrategyId = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
ModelVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
Name30 = Annotated[str, msgspec.Meta(min_length=1, max_length=30)]
Name50 = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0, le=2_147_483_647)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0, le=2_147_483_647)]
JsonObject = dict[str, Any]


_UNITS = [Decimal(1).scaleb(-scale) for scale in range(40)]  # 1, 0.1, 0.01, ...


def decimal_fits(value: Decimal, precision: int, scale: int) -> str | None:
    """Why ``value`` does not fit ``DECIMAL(precision, scale)`` exactly, or None if it does.

    The checks are C-level Decimal operations (this runs for every decimal of every message);
    the digit counting for the explanation happens only when a value does not fit.
    """
    if not value.is_finite():
        return f"{value} is not a finite number"
    if value == 0:
        return None
    too_large = value.adjusted() >= precision - scale  # adjusted(): exponent of leading digit
    if not too_large:
        try:
            if value.quantize(_UNITS[scale]) == value:
                return None
        except InvalidOperation:  # more digits than the context holds: certainly too many
            pass
    return _explain(value, precision, scale)


def _explain(value: Decimal, precision: int, scale: int) -> str:
    # as_tuple, not normalize(): normalize rounds to the context's 28 digits
    _, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:  # 1.500 has one decimal place
        digits.pop()
        exponent += 1
    fraction_digits = max(0, -exponent)
    if fraction_digits > scale:
        return f"{value} has {fraction_digits} decimal places; the column keeps {scale}"
    integer_digits = max(0, len(digits) + exponent)
    return (f"{value} has {integer_digits} integer digits; DECIMAL({precision}, {scale}) "
            f"holds {precision - scale}")


class Bound(NamedTuple):
    """A decimal field's range beyond its column's precision (the database's CHECKs, applied
    at decoding so the dead letter says which field, and exported in the JSON Schema)."""

    low: Decimal | None = None
    high: Decimal | None = None
    low_exclusive: bool = False

    def refuses(self, value: Decimal) -> str | None:
        if self.low is not None and (value <= self.low if self.low_exclusive
                                     else value < self.low):
            return f"must be {'>' if self.low_exclusive else '>='} {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


POSITIVE = Bound(low=Decimal(0), low_exclusive=True)
NON_NEGATIVE = Bound(low=Decimal(0))


def between(low: int, high: int) -> Bound:
    return Bound(low=Decimal(low), high=Decimal(high))


class Contract(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Base of every event: checks each ``Decimal`` field against its column after decoding.

    Subclasses list their decimal fields in ``decimals`` as ``{field: (precision, scale)}``.
    Unknown fields are ignored, so producers may add fields before consumers know them.
    """

    decimals: ClassVar[dict[str, tuple[int, int]]] = {}
    # decimal fields' ranges beyond their precision: POSITIVE, NON_NEGATIVE, between(a, b)
    bounds: ClassVar[dict[str, Bound]] = {}
    # rules JSON Schema cannot express (across fields, against the clock or stored state):
    # named in the exported schema's description
    rules: ClassVar[tuple[str, ...]] = ()
    # (field, quantum, first adjusted() too large), derived once per class from ``decimals``
    _decimal_checks: ClassVar[tuple[tuple[str, Decimal, int], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._decimal_checks = tuple(
            (name, _UNITS[scale], precision - scale)
            for name, (precision, scale) in cls.decimals.items()
        )

    def __post_init__(self) -> None:
        # The fast path of decimal_fits, inlined: this runs for every decimal of every message.
        for name, unit, too_large in self._decimal_checks:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if value.adjusted() < too_large and value.quantize(unit) == value:
                    continue
            except InvalidOperation:
                pass
            problem = decimal_fits(value, *self.decimals[name])
            if problem:
                # msgspec turns ValueError raised here into a ValidationError
                raise ValueError(f"{name}: {problem}")
        for name, bound in self.bounds.items():
            value = getattr(self, name)
            if value is not None and (refused := bound.refuses(value)):
                raise ValueError(f"{name}: {value} {refused}")


def nullable(field: msgspec.structs.FieldInfo) -> bool:
    """Whether a contract's field may hold null (None)."""
    return field.default is None or type(None) in getattr(field.type, "__args__", ())


def unwrapped(inspected: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, bool]:
    """A field's type (``msgspec.inspect``) without its constraints and its ``| None``, and
    whether it may be null: what the Avro and Protobuf schemas are made from."""
    if isinstance(inspected, msgspec.inspect.Metadata):
        return unwrapped(inspected.type)
    if isinstance(inspected, msgspec.inspect.UnionType):
        others = [t for t in inspected.types if not isinstance(t, msgspec.inspect.NoneType)]
        assert len(others) == 1, f"{inspected}: a union of types no schema here expresses"
        return unwrapped(others[0])[0], len(others) < len(inspected.types)
    return inspected, False


def contract_schema(event_type: Any) -> dict[str, Any]:
    """JSON Schema of a contract, for producers in other languages: every rule the decoder
    enforces that JSON Schema can say.

    A decimal field takes a JSON number (bounded by its column's precision, a multiple of its
    scale's unit, signed as the contract requires) or a decimal string in plain notation (a
    pattern with the same limits; the decoder also reads a few more lenient forms, such as
    exponent notation, which the schema does not promise). Rules the schema cannot express
    are named in each contract's description.
    """
    schema: dict[str, Any] = msgspec.json.schema(event_type)
    contracts = _contract_classes()
    for name, definition in schema.get("$defs", {}).items():
        contract = contracts.get(name)
        if contract is not None:
            _describe_decimals(definition, contract)
    return schema


def _contract_classes() -> dict[str, type[Contract]]:
    found: dict[str, type[Contract]] = {}
    pending: list[type[Contract]] = [Contract]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _describe_decimals(definition: dict[str, Any], contract: type[Contract]) -> None:
    properties = definition.get("properties", {})
    for field, (precision, scale) in contract.decimals.items():
        property_ = properties[field]
        exact = _decimal_schema(precision, scale, contract.bounds.get(field, Bound()))
        if "anyOf" in property_:  # optional: the decimal or null
            property_["anyOf"] = [
                exact if branch.get("format") == "decimal" else branch
                for branch in property_["anyOf"]]
        else:
            default = property_.get("default")
            property_.clear()
            property_.update(exact)
            if default is not None:
                property_["default"] = default
    if contract.rules:
        note = "Also refused, beyond this schema: " + "; ".join(contract.rules) + "."
        description = definition.get("description")
        definition["description"] = f"{description} {note}" if description else note


def _decimal_schema(precision: int, scale: int, bound: Bound) -> dict[str, Any]:
    """DECIMAL(precision, scale), within ``bound``, as a JSON number or a decimal string in
    plain notation."""
    integer_digits = precision - scale
    number: dict[str, Any] = {
        "type": "number",
        "exclusiveMaximum": 10 ** integer_digits,
        "exclusiveMinimum": -(10 ** integer_digits),
        "multipleOf": float(f"1e-{scale}") if scale else 1,
    }
    if bound.low is not None:
        del number["exclusiveMinimum"]
        number["exclusiveMinimum" if bound.low_exclusive else "minimum"] = int(bound.low)
    if bound.high is not None:
        del number["exclusiveMaximum"]
        number["maximum"] = int(bound.high)
    text = {"type": "string", "pattern": f"^{decimal_pattern(integer_digits, scale, bound)}$",
            "description": f"DECIMAL({precision}, {scale}) in plain notation"}
    return {"anyOf": [number, text]}


def decimal_pattern(integer_digits: int, scale: int, bound: Bound) -> str:
    """A regular expression (unanchored) for the plain-notation decimals with at most
    ``integer_digits`` before the point and ``scale`` significant places after it, within
    ``bound``: the JSON Schema's decimal strings, and the text fast path's check (text.py).

    Written without lookaheads: Python's ``re`` runs each as a nested match, and a bar's 17
    decimals took a fifth longer to check with them (3.8-4.2 us against 3.3 us)."""
    fraction = rf"(?:\.[0-9]{{0,{scale}}}0*)?" if scale else r"(?:\.0*)?"
    # a digit before the point ("5", "5.", "0.5"), or none and one after it (".5")
    point_first = rf"\.[0-9]{{1,{scale}}}0*" if scale else r"\.0+"
    if bound.high is not None:  # [0, H] or [-H, H], H a power of ten: 1 or 100 here
        high = int(bound.high)
        assert str(high).strip("0") == "1" and bound.low in (0, -high), bound
        sign = "-?" if bound.low == -high else ""
        below = _digits_first(len(str(high)) - 1) + fraction
        return rf"{sign}(?:0*{high}(?:\.0*)?|{below}|{point_first})"
    if bound.low == 0 and bound.low_exclusive:  # a nonzero digit among the significant ones
        nonzero_fraction = "|".join(
            f"0{{{zeros}}}[1-9][0-9]{{0,{scale - 1 - zeros}}}" for zeros in range(scale))
        forms = [f"0*[1-9][0-9]{{0,{integer_digits - 1}}}{fraction}"] if integer_digits else []
        if scale:
            forms.append(rf"0*\.(?:{nonzero_fraction})0*")
        return f"(?:{'|'.join(forms)})"
    sign = "" if bound.low == 0 else "-?"
    return rf"{sign}(?:{_digits_first(integer_digits)}{fraction}|{point_first})"


def _digits_first(integer_digits: int) -> str:
    """The integer part of a number that starts with a digit: leading zeros, then at most
    ``integer_digits`` digits."""
    return f"0*[0-9]{{1,{integer_digits}}}" if integer_digits else "0+"
