"""A contract as a schema registry holds it, in the format producers serialize with: what
`cie contracts register` registers under ``<topic>-value``, one definition for all three."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from consumers.contracts.avro import avro_schema_text
from consumers.contracts.base import contract_schema
from consumers.contracts.protobuf import proto_schema_text

Format = Literal["avro", "protobuf", "json"]
SchemaKind = Literal["AVRO", "PROTOBUF", "JSON"]  # the registry's schemaType
KINDS: dict[Format, SchemaKind] = {"avro": "AVRO", "protobuf": "PROTOBUF", "json": "JSON"}
# msgspec writes 2020-12 schemas; registries tell JSON Schema from other JSON by this
JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def registered_schema(fmt: Format, contract: Any) -> str:
    """The schema text of ``contract`` in ``fmt``."""
    if fmt == "avro":
        return avro_schema_text(contract)
    if fmt == "protobuf":
        return proto_schema_text(contract)
    return msgspec.json.encode({"$schema": JSON_SCHEMA_DRAFT,
                                **contract_schema(contract)}).decode()
