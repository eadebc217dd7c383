"""Database access helpers: connections and the named-query loader for schema/queries/*.sql.

The SQL ships inside the package (``consumers/schema`` links to the repository's ``schema/``,
and the wheel carries its files), so an installed ``cie`` finds it with importlib.resources."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from operator import attrgetter
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one lent by a pool: pipelines accept either.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

SCHEMA: Traversable = files("consumers") / "schema"  # the migrations; queries/ beside them

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def queries(module: str) -> dict[str, str]:
    """The named blocks of ``schema/queries/<module>.sql``: ``-- name: x`` starts block x."""
    text = (SCHEMA / "queries" / f"{module}.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    named = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not named:
        raise ValueError(f"schema/queries/{module}.sql has no '-- name:' blocks")
    return named


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection, UTC session time zone (date bucketing never follows a server default)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        database_url, server_settings=SERVER_SETTINGS
    )
    return conn


SERVER_SETTINGS = {"timezone": "UTC", "application_name": "cie"}

# asyncpg prepares every statement, and after five runs PostgreSQL may switch it to a generic
# plan that it keeps until the table is next analyzed: a consumer started on an empty table
# would keep a sequential scan for the fills ledger read while the table grows. The pool's
# statements are few and cheap to plan, so plan every run for its arguments (bench/README.md).
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}


ConnectionInit: TypeAlias = Callable[[asyncpg.Connection], Coroutine[Any, Any, None]]


async def create_pool(database_url: str, init: ConnectionInit | None = None, *,
                      max_size: int = 4, command_timeout: float = 60) -> asyncpg.Pool:
    """A small pool (CIE_DB_POOL_SIZE); ``init`` runs on each new connection (the ingest
    pipelines create their temporary staging tables there).

    min_size=0: the pool starts even while the database is down (the writer retries).
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url, min_size=0, max_size=max_size, init=init,
        server_settings={**SERVER_SETTINGS, **CUSTOM_PLANS}, command_timeout=command_timeout,
        reset=_keep_session)
    return pool


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A pooled connection that is closed, not returned, when its work was interrupted
    (cancelled by a revocation or drain deadline or a timeout, or the client lost track of
    its state): a half-done operation must never reach the connection's next user, who would
    fail with "another operation is in progress". The pool opens a fresh one instead."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except (asyncio.CancelledError, asyncpg.InterfaceError):
            with contextlib.suppress(asyncpg.InterfaceError):  # the pool already let it go
                conn.terminate()
            raise


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Instead of asyncpg's reset on release (unlock all advisory locks, CLOSE ALL, UNLISTEN,
    RESET ALL: one more round trip per flush, about 5 % of the rate at 100-row batches).
    Nothing run on these pools leaves session state behind: writes take transaction-scoped
    locks, settings are fixed at connect, and the rollup's one session lock is released in a
    ``finally``."""


NULL_TEXT = "\\N"  # COPY text's null


def escape_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (value.replace("\\", "\\\\").replace("\t", "\\t")
                .replace("\n", "\\n").replace("\r", "\\r"))
    return value


_json = msgspec.json.encode


def datetime_text(value: datetime) -> str:
    """RFC 3339 as msgspec writes it ("...T06:26:26.800575Z", "+01:00"; a naive value without
    a zone): 0.25 us against 1.4 us for str(), and a fill's row holds two. msgspec writes an
    offset in whole minutes: an offset with seconds (old local mean times) takes str()."""
    if value.tzinfo is not UTC and value.tzinfo is not None:  # decoded times are in UTC
        offset = value.utcoffset()
        if offset is not None and (offset.seconds % 60 or offset.microseconds):
            return str(value)
    return _json(value)[1:-1].decode()


# COPY text format per Python type; anything else (int, Decimal, date) is its
# str(), which PostgreSQL reads back exactly. Decimals go as their exact decimal text.
_TEXT: dict[type, Callable[[Any], str]] = {
    type(None): lambda _: NULL_TEXT,
    str: escape_text,
    bool: lambda value: "t" if value else "f",
    # PostgreSQL reads a UUID without hyphens too, and .hex costs a third of str() (which
    # made a quarter of encoding a fill's row)
    UUID: attrgetter("hex"),
    datetime: datetime_text,
}


def copy_field(value: Any) -> str:
    """One value as COPY text (what ``copy_line`` writes for it)."""
    return _TEXT.get(type(value), str)(value)


def copy_line(row: Sequence[Any]) -> str:
    """One row as a line of COPY text format (tab-separated, \\N for NULL, escaped strings)."""
    return "\t".join([_TEXT.get(type(v), str)(v) for v in row]) + "\n"


async def copy_new_lines(
    conn: Conn, table: str, columns: Sequence[str], lines: Sequence[str]
) -> bool:
    """COPY rows (as ``copy_line`` lines) straight into ``table`` if none of their keys is
    stored yet.

    In a savepoint: on a unique violation it is rolled back and False is returned, and the
    caller decides what to do with the stored keys (the fills pipeline refuses fills stored
    under another trade and upserts trade rows). Other errors propagate.
    """
    try:
        async with conn.transaction():
            await copy_lines(conn, table, columns, lines)
    except asyncpg.UniqueViolationError:
        return False
    return True


async def copy_rows(
    conn: Conn, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    await copy_lines(conn, table, columns, map(copy_line, rows))


async def copy_lines(
    conn: Conn, table: str, columns: Sequence[str], lines: Iterable[str]
) -> None:
    """COPY rows, already ``copy_line`` text, into ``table``.

    Text, not binary: asyncpg's binary encoding of Decimal costs more on the client than the
    text of the same value, and decimal text is exact. Every value has been validated by its
    contract before it gets here.
    """
    # An async iterable is sent as it comes; a file-like source (BytesIO) would be read
    # through a thread pool, two thread hops per COPY.
    await conn.copy_to_table(
        table, source=_once("".join(lines).encode()), columns=list(columns), format="text")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
