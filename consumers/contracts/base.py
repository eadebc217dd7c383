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
from typing import Annotated, Any, ClassVar

import msgspec

UtcTime = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 timestamp with an offset")
]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=10, pattern=r"^[A-Z0-9.\-/]+$")]
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


class Contract(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Base of every event: checks each ``Decimal`` field against its column after decoding.

    Subclasses list their decimal fields in ``decimals`` as ``{field: (precision, scale)}``.
    Unknown fields are ignored, so producers may add fields before consumers know them.
    """

    decimals: ClassVar[dict[str, tuple[int, int]]] = {}
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


def contract_schema(event_type: Any) -> dict[str, Any]:
    """JSON Schema of a contract, for producers in other languages.

    Decimal fields accept a JSON number or a decimal string (both decode exactly); msgspec
    alone would document only the string form.
    """
    schema: dict[str, Any] = msgspec.json.schema(event_type)
    return _accept_decimal_numbers(schema)  # type: ignore[no-any-return]


def _accept_decimal_numbers(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "decimal":
            return {"anyOf": [{"type": "number"}, {"type": "string", "format": "decimal"}]}
        return {key: _accept_decimal_numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_accept_decimal_numbers(item) for item in node]
    return node
