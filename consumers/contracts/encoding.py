"""How a message's value is written: JSON, or MessagePack when its ``content-type`` says so.

Decided per message from its own header, with no setting to flip, so one topic may carry
both while producers move from one to the other. A message without the header is JSON, as
every producer sent before MessagePack was read. A content type this consumer does not read
is still tried as JSON (a producer that labels its JSON oddly keeps working); if that fails,
the dead letter's reason names the content type.

Both decode into the same contract with the same rules. MessagePack has no decimal type:
decimals are best sent as strings (exact); a float64 is read by its shortest repr, the digits
a JSON encoder would write for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import msgspec

CONTENT_TYPE = "content-type"  # the header (CloudEvents' Kafka binding names it so, too)
MSGPACK = "application/msgpack"  # what our producer writes
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_JSON_TYPES = frozenset({"application/json", "text/json"})


class Encoding(Enum):
    JSON = "json"
    MSGPACK = "msgpack"
    AVRO = "avro"  # these two only inside a schema registry's framing (ingest/schemas.py)
    PROTOBUF = "protobuf"


class Declared:
    """A message's encoding, and the content type it declared if it is not one we know."""

    __slots__ = ("encoding", "unknown")

    def __init__(self, encoding: Encoding, unknown: str | None = None) -> None:
        self.encoding = encoding
        self.unknown = unknown

    def explain(self, reason: str) -> str:
        """A decoding error's reason, naming the unknown content type it was read despite."""
        if self.unknown is None:
            return reason
        return (f"{reason} (content-type {self.unknown!r} is not one this consumer reads, "
                "so the value was read as JSON; it reads JSON and application/msgpack)")


JSON = Declared(Encoding.JSON)
_PACKED = Declared(Encoding.MSGPACK)


def declared(headers: Sequence[tuple[str, bytes]] | None) -> Declared:
    """The encoding ``headers`` declare for the value (their first ``content-type``)."""
    for name, value in headers or ():
        if name.lower() == CONTENT_TYPE:
            return _of_media_type(value)
    return JSON


def _of_media_type(value: bytes | None) -> Declared:
    text = (value or b"").decode("latin-1")
    media = text.split(";", 1)[0].strip().strip('"').lower()  # Spring quotes it
    if media in _MSGPACK_TYPES:
        return _PACKED
    if not media or media in _JSON_TYPES:
        return JSON
    return Declared(Encoding.JSON, unknown=text[:100])


def readable(value: bytes, headers: Sequence[tuple[str, bytes]] | None) -> str:
    """``value`` as text for people: MessagePack shown as JSON (if it decodes)."""
    if declared(headers).encoding is Encoding.MSGPACK:
        try:
            return msgspec.json.encode(msgspec.msgpack.decode(value)).decode()
        except (msgspec.DecodeError, TypeError, ValueError):
            pass  # shown as it is
    return value.decode(errors="replace")
