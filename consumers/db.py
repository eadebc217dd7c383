"""Database access helpers: connections and the named-query loader for schema/queries/*.sql."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import asyncpg

QUERIES_DIR = Path(__file__).resolve().parent.parent / "schema" / "queries"

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def queries(module: str) -> dict[str, str]:
    """The named blocks of ``schema/queries/<module>.sql``: ``-- name: x`` starts block x."""
    text = (QUERIES_DIR / f"{module}.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    named = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not named:
        raise ValueError(f"schema/queries/{module}.sql has no '-- name:' blocks")
    return named


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection, UTC session time zone (date bucketing never follows a server default)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        database_url, server_settings={"timezone": "UTC", "application_name": "cie"}
    )
    return conn
