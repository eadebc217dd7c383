"""Free-form JSON fields: what one message's feature vector or payloads may decode to.

A contract says nothing of these fields' shape (``Any``, ``dict[str, Any]``), and JSON of
small elements decodes to many times its size in Python objects: 64 KiB of ``0.1,`` becomes
about 1.8 MiB of ``Decimal``s. ``FreeFormGuard`` bounds each message's share, so a batch's
memory follows its raw bytes (docs/reliability.md, "Memory"):
- each free-form field's JSON text is at most ``max_bytes``, measured before anything is
  decoded (a message no longer than that cannot hold a longer field, and is not measured);
- together they hold at most ``max_elements`` values, none nested deeper than ``max_depth``,
  measured after decoding (bounded work: the text was bounded first).
A message past a limit is refused with ``FreeFormTooLarge`` and becomes a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from consumers.contracts.encoding import Encoding
from consumers.errors import FreeFormTooLarge, NotJsonValue

_NAMES = {Encoding.JSON: "JSON", Encoding.MSGPACK: "MessagePack", Encoding.AVRO: "Avro",
          Encoding.PROTOBUF: "Protobuf"}


@dataclass(frozen=True)
class FreeFormLimits:
    """What one message's free-form JSON fields may hold."""

    max_bytes: int = 65_536  # JSON text of one field
    max_elements: int = 10_000  # values inside objects and arrays, all fields together
    max_depth: int = 32  # objects and arrays nested in each other


def free_form_fields(event_type: Any) -> dict[type, tuple[str, ...]]:
    """``{contract class: its free-form fields}`` for a contract or a union of them."""
    info = msgspec.inspect.type_info(event_type)
    structs = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    found: dict[type, tuple[str, ...]] = {}
    for struct in structs:
        if isinstance(struct, msgspec.inspect.StructType):
            found[struct.cls] = tuple(
                field.name for field in struct.fields if _is_free_form(field.type))
    return found


def _is_free_form(field_type: msgspec.inspect.Type) -> bool:
    if isinstance(field_type, msgspec.inspect.UnionType):  # Optional[...]
        return any(_is_free_form(t) for t in field_type.types)
    if isinstance(field_type, msgspec.inspect.AnyType):
        return True
    if isinstance(field_type, msgspec.inspect.DictType | msgspec.inspect.ListType):
        values = (field_type.value_type if isinstance(field_type, msgspec.inspect.DictType)
                  else field_type.item_type)
        return isinstance(values, msgspec.inspect.AnyType)
    return False


class FreeFormGuard:
    """The free-form limits of one topic's contract."""

    def __init__(self, event_type: Any, limits: FreeFormLimits) -> None:
        self.limits = limits
        self.fields = {cls: names for cls, names in free_form_fields(event_type).items() if names}
        names = sorted({name for names in self.fields.values() for name in names})
        self.names = tuple(names)
        # The fields as raw text: msgspec checks the message is JSON (or MessagePack) and
        # slices the fields out without building a Python object (every other field is
        # skipped). MessagePack is held to the same byte limit: it is the denser of the two.
        texts = msgspec.defstruct("FreeFormTexts", [(n, msgspec.Raw, msgspec.Raw()) for n in names])
        self._texts: dict[Encoding, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]] = {
            Encoding.JSON: msgspec.json.Decoder(texts),
            Encoding.MSGPACK: msgspec.msgpack.Decoder(texts)}

    def check_text(self, value: bytes, encoding: Encoding = Encoding.JSON) -> None:
        """Before decoding: raises FreeFormTooLarge if a field's encoded text is too long (in
        Avro and Protobuf each field's JSON text is measured as it is parsed: parse_texts)."""
        if not self.names or len(value) <= self.limits.max_bytes or encoding not in self._texts:
            return
        texts = self._texts[encoding].decode(value)
        for name in self.names:
            size = len(getattr(texts, name))
            if size > self.limits.max_bytes:
                raise FreeFormTooLarge(
                    f"{name}: {size} bytes of {_NAMES[encoding]}; at most "
                    f"{self.limits.max_bytes} (CIE_FREE_FORM_MAX_BYTES)")

    def check_shape(self, event: Any, value: bytes, encoding: Encoding = Encoding.JSON) -> None:
        """After decoding ``value`` into ``event``: raises FreeFormTooLarge past the element or
        depth limit, or for a MessagePack binary value (it has no JSON form)."""
        if not self.names:
            return
        if (encoding is Encoding.JSON and len(value) <= self.limits.max_elements
                and value.count(b"{") + value.count(b"[") <= self.limits.max_depth):
            return  # too short for that many values, too few brackets for that much nesting
        budget = self.limits.max_elements
        for name in self.fields.get(type(event), ()):
            budget = self._measure(name, getattr(event, name), budget)

    def _measure(self, name: str, value: Any, budget: int) -> int:
        """``budget`` less the values ``value`` holds."""
        pending = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if isinstance(item, bytes):
                raise NotJsonValue(f"{name}: holds a binary value, which has no JSON form")
            if not isinstance(item, dict | list):
                continue
            if depth > self.limits.max_depth:
                raise FreeFormTooLarge(
                    f"{name}: nested deeper than {self.limits.max_depth} levels "
                    "(CIE_FREE_FORM_MAX_DEPTH)")
            budget -= len(item)
            if budget < 0:
                raise FreeFormTooLarge(
                    f"{name}: the free-form fields hold more than {self.limits.max_elements} "
                    "values (CIE_FREE_FORM_MAX_ELEMENTS)")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children
                           if isinstance(child, dict | list | bytes))
        return budget

    def forget(self, event: Any) -> None:
        """Drop ``event``'s free-form values (in place: only for an event decoded for one batch
        alone, whose values have been encoded): the batch then holds their text, not the many
        times larger objects."""
        for name in self.fields.get(type(event), ()):
            msgspec.structs.force_setattr(event, name, None)


_exact: msgspec.json.Decoder[Any] = msgspec.json.Decoder(float_hook=Decimal)


def parse_texts(record: dict[str, Any], names: tuple[str, ...], max_bytes: int
                ) -> dict[str, Any]:
    """``record`` (read from Avro or Protobuf, which carry free-form fields as JSON text) with
    those fields parsed, numbers exact as on the JSON path; each text at most ``max_bytes``."""
    for name in names:
        text = record.get(name)
        if isinstance(text, str):
            if len(text) > max_bytes and len(encoded := text.encode()) > max_bytes:
                raise FreeFormTooLarge(
                    f"{name}: {len(encoded)} bytes of JSON; at most {max_bytes} "
                    "(CIE_FREE_FORM_MAX_BYTES)")
            record[name] = _exact.decode(text)
    return record
