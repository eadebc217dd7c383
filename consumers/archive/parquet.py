"""Rows of a PostgreSQL table as Parquet with exact types: NUMERIC(p, s) as Parquet decimal of
the column's precision and scale, timestamps as UTC microseconds, UUIDs and JSON as text,
integers of the column's width. The Arrow schema comes from the catalog, so a column added by
a migration is archived without a code change."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pyarrow as pa

from consumers.platform.db import Conn, queries

# PostgreSQL type (pg_catalog.format_type without modifiers) -> Arrow type
_SIMPLE: dict[str, pa.DataType] = {
    "smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64(),
    "boolean": pa.bool_(), "real": pa.float32(), "double precision": pa.float64(),
    "text": pa.string(), "character varying": pa.string(), "character": pa.string(),
    "uuid": pa.string(), "jsonb": pa.string(), "json": pa.string(), "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
}
# A NUMERIC without a precision has none to keep: as text, never through a float.
_UNBOUNDED_NUMERIC = pa.string()


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    convert: bool  # values need turning into what Arrow takes (UUID, JSON, unbounded numeric)


async def table_columns(conn: Conn, table: str) -> list[Column]:
    """The table's columns, in order, as Arrow types."""
    rows = await conn.fetch(queries("archive")["table_columns"], table)
    if not rows:
        raise LookupError(f"no such table: {table}")
    return [_column(row) for row in rows]


def _column(row: asyncpg.Record) -> Column:
    kind: str = row["base_type"]
    if kind == "numeric":
        if row["precision"] is None:
            return Column(row["name"], _UNBOUNDED_NUMERIC, True)
        return Column(row["name"], pa.decimal128(row["precision"], row["scale"]), False)
    if kind not in _SIMPLE:
        raise TypeError(f"column {row['name']}: no Parquet type for {kind}")
    return Column(row["name"], _SIMPLE[kind], kind in ("uuid", "json", "jsonb"))


def schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in columns])


def record_batch(columns: Sequence[Column], rows: Sequence[asyncpg.Record]) -> pa.RecordBatch:
    """Rows fetched with the columns in order, as one batch (exact: decimals stay Decimal)."""
    arrays = []
    for index, column in enumerate(columns):
        values: Iterable[Any] = (row[index] for row in rows)
        if column.convert:
            values = (_text(value) for value in values)
        arrays.append(pa.array(list(values), type=column.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema(columns))


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
