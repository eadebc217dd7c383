"""`cie archive`: trade_outcomes and trade_fills months past the archive horizon, to Parquet in
S3, each object verified by reading it back before anything may be removed.

For each table and each UTC month that ended before ``now - horizon`` (default: the table's
retention, 5 years) and still has rows, in one REPEATABLE READ snapshot:

1. The month's *slices* (what retention removes at once: a chunk's share of the month on
   TimescaleDB, the whole month on plain PostgreSQL) are counted and compared with
   ``archive_slices`` (rows archived minus rows removed). Equal everywhere: nothing to do, so a
   re-run writes nothing.
2. Otherwise the rows not yet archived are streamed from a server-side cursor (``batch_rows``
   at a time, one Parquet row group each, so memory stays bounded) into a new part: all rows of
   a month never archived (part 0), or the rows missing from the month's parts (a late trade:
   part 1, 2, ...; the parts' keys are read back from S3 to tell which).
3. The file (zstd, exact types: consumers/archive/parquet.py) is uploaded to
   ``<prefix>/<table>/year=YYYY/month=MM/part-NNNNN.parquet`` (Hive-style: DuckDB, Spark,
   Athena and pandas read the tree directly), downloaded again, and checked: SHA-256, row count
   and the sum of net_pnl as read back. Then its manifest goes beside it (``.json``), and one
   transaction records the part and adds its rows to its slices.

Only that last transaction makes a part count. A run killed before it leaves an object no
manifest row counts, and the next run writes the same part again, byte for byte (the same
rows in the same order, the same writer). One run at a time (an advisory lock).
"""

from __future__ import annotations

import bisect
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from consumers.archive import parquet
from consumers.archive.store import ObjectStore, sha256_of
from consumers.errors import CieError
from consumers.platform.db import Conn, queries

log = structlog.get_logger(__name__)

# The tables archived: their time column and key (a part's rows are told apart by it).
TABLES: dict[str, tuple[str, tuple[str, str]]] = {
    "trade_outcomes": ("entry_time", ("trade_id", "entry_time")),
    "trade_fills": ("filled_at", ("fill_id", "filled_at")),
}
LOCK_KEY = 0x43494541  # pg_advisory_lock: one archive run at a time ("CIEA")


class ArchiveError(CieError):
    """An uploaded object did not read back as written: nothing is recorded, nothing removed."""


@dataclass(frozen=True)
class Options:
    horizon: timedelta | None  # None: each table's retention (retention_rules)
    batch_rows: int  # rows per fetch and per Parquet row group


@dataclass(frozen=True)
class Part:
    table: str
    month: date
    part: int
    key: str
    rows: int
    bytes: int


@dataclass
class _Written:
    rows: int = 0
    min_time: datetime | None = None
    max_time: datetime | None = None
    net_pnl: Decimal | None = None
    slices: dict[datetime, int] = field(default_factory=dict)


async def archive(conn: Conn, store: ObjectStore, options: Options) -> list[Part]:
    """Archive every table's due months; the parts written (none when all is archived)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        raise CieError("another cie archive is running (advisory lock held)")
    try:
        parts = []
        for table in TABLES:
            rule = await conn.fetchrow(queries("archive")["rule"], table)
            assert rule is not None, table
            horizon = options.horizon or rule["keep_for"]
            due = queries("archive")["due_months"].format(
                table=f'"{table}"', time=f'"{TABLES[table][0]}"')
            for row in await conn.fetch(due, horizon):
                part = await archive_month(conn, store, table, row["month"], options)
                if part:
                    parts.append(part)
        return parts
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def archive_month(conn: Conn, store: ObjectStore, table: str, month: date,
                        options: Options) -> Part | None:
    sql = queries("archive")
    time_column, key_columns = TABLES[table]
    with tempfile.TemporaryDirectory(prefix="cie-archive-") as tmp:
        local = Path(tmp) / "part.parquet"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            slices = await month_slices(conn, table, month)
            behind = [s for s in slices if s.live != s.archived - s.removed]
            if not behind:
                return None
            previous = await conn.fetch(sql["month_parts"], table, month)
            number = max((p["part"] for p in previous), default=-1) + 1
            archived_keys = await _archived_keys(store, [p["object_key"] for p in previous],
                                                 key_columns, Path(tmp))
            written = await _export(conn, table, time_column, key_columns, month,
                                    [s.start for s in slices], archived_keys,
                                    local, options.batch_rows)
        if written.rows == 0:  # the counts differ, yet every row is archived: rows went away
            log.warning("archive.rows_removed_outside_retention", table=table,
                        month=month.isoformat(),
                        slices=[str(s) for s in behind])
            return None
        key = f"{table}/year={month.year:04d}/month={month.month:02d}/part-{number:05d}.parquet"
        digest = await _upload_and_verify(store, local, key, written, Path(tmp))
        size = local.stat().st_size
        await store.put_bytes(_manifest(table, month, number, key, written, digest, size), key
                              + ".json")
        async with conn.transaction():
            await conn.execute(sql["record_part"], table, month, number, key, written.rows,
                               written.min_time, written.max_time, written.net_pnl, size,
                               digest)
            for start, count in written.slices.items():
                end = next(s.end for s in slices if s.start == start)
                await conn.execute(sql["add_to_slice"], table, start, end, count)
    log.info("archive.part_written", table=table, month=month.isoformat(), part=number,
             key=key, rows=written.rows, bytes=size, sha256=digest)
    return Part(table, month, number, key, written.rows, size)


@dataclass(frozen=True)
class Slice:
    """What retention removes at once, in one month: rows in the table now, archived, and
    removed after archiving. Up to date when live == archived - removed."""

    start: datetime
    end: datetime
    live: int
    archived: int
    removed: int


def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return start, datetime(following.year, following.month, 1, tzinfo=UTC)


async def month_slices(conn: Conn, table: str, month: date) -> list[Slice]:
    """The month's slices: its share of each TimescaleDB chunk (the drop job removes chunks),
    or the whole month on plain PostgreSQL (`cie maintain` deletes months)."""
    sql = queries("archive")
    start, end = month_bounds(month)
    ranges = [(start, end)]
    if (await conn.fetchval(sql["timescaledb_here"])
            and await conn.fetchval(sql["is_hypertable"], table)):
        ranges = [(r["slice_start"], r["slice_end"])
                  for r in await conn.fetch(sql["month_chunks"], table, start, end)]
    time_column = TABLES[table][0]
    count = sql["slice_rows"].format(table=f'"{table}"', time=f'"{time_column}"')
    slices = []
    for slice_start, slice_end in ranges:
        recorded = await conn.fetchrow(sql["slice_state"], table, slice_start)
        slices.append(Slice(slice_start, slice_end,
                            await conn.fetchval(count, slice_start, slice_end),
                            recorded["archived_rows"] if recorded else 0,
                            recorded["removed_rows"] if recorded else 0))
    return slices


async def _archived_keys(store: ObjectStore, keys: Sequence[str], key_columns: tuple[str, str],
                         tmp: Path) -> set[tuple[str, datetime]]:
    """The keys of the rows a month's parts hold, read back from S3 (only the key columns)."""
    found: set[tuple[str, datetime]] = set()
    for number, key in enumerate(keys):
        path = tmp / f"previous-{number}.parquet"
        await store.download(key, path)
        table = pq.read_table(path, columns=list(key_columns))
        found.update(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    return found


async def _export(conn: Conn, table: str, time_column: str, key_columns: tuple[str, str],
                  month: date, slice_starts: list[datetime],
                  archived_keys: set[tuple[str, datetime]], path: Path,
                  batch_rows: int) -> _Written:
    columns = await parquet.table_columns(conn, table)
    names = [c.name for c in columns]
    key_index = (names.index(key_columns[0]), names.index(key_columns[1]))
    time_index = names.index(time_column)
    pnl_index = names.index("net_pnl") if "net_pnl" in names else None
    written = _Written(net_pnl=Decimal(0) if pnl_index is not None else None)
    statement = queries("archive")["month_rows"].format(
        columns=", ".join(f'"{n}"' for n in names), table=f'"{table}"',
        time=f'"{time_column}"', key=f'"{key_columns[0]}"')
    start, end = month_bounds(month)
    with pq.ParquetWriter(path, parquet.schema(columns), compression="zstd") as writer:
        batch: list[asyncpg.Record] = []
        async for row in conn.cursor(statement, start, end, prefetch=batch_rows):
            if archived_keys and (str(row[key_index[0]]), row[key_index[1]]) in archived_keys:
                continue
            batch.append(row)
            _count(written, row, time_index, pnl_index, slice_starts)
            if len(batch) >= batch_rows:
                writer.write_batch(parquet.record_batch(columns, batch))
                batch = []
        if batch:
            writer.write_batch(parquet.record_batch(columns, batch))
    return written


def _count(written: _Written, row: asyncpg.Record, time_index: int, pnl_index: int | None,
           slice_starts: list[datetime]) -> None:
    at: datetime = row[time_index]
    written.rows += 1
    written.min_time = at if written.min_time is None else min(written.min_time, at)
    written.max_time = at if written.max_time is None else max(written.max_time, at)
    if pnl_index is not None and row[pnl_index] is not None:
        assert written.net_pnl is not None
        written.net_pnl += row[pnl_index]
    start = slice_starts[bisect.bisect_right(slice_starts, at) - 1]
    written.slices[start] = written.slices.get(start, 0) + 1


async def _upload_and_verify(store: ObjectStore, local: Path, key: str, written: _Written,
                             tmp: Path) -> str:
    digest = sha256_of(local)
    await store.upload(local, key)
    back = tmp / "read-back.parquet"
    read_digest = await store.download(key, back)
    table = pq.read_table(back)
    problems = []
    if read_digest != digest:
        problems.append(f"sha256 {read_digest} != {digest}")
    if table.num_rows != written.rows:
        problems.append(f"{table.num_rows} rows read back, {written.rows} written")
    if written.net_pnl is not None:
        total = pc.sum(table.column("net_pnl")).as_py()
        if (total or Decimal(0)) != written.net_pnl:
            problems.append(f"net_pnl sums to {total} read back, {written.net_pnl} written")
    if problems:
        raise ArchiveError(f"{key}: {'; '.join(problems)}")
    return digest


def _manifest(table: str, month: date, part: int, key: str, written: _Written, digest: str,
              size: int) -> bytes:
    manifest: dict[str, Any] = {
        "table": table, "month": month.strftime("%Y-%m"), "part": part, "object": key,
        "rows": written.rows, "bytes": size, "sha256": digest,
        "min_time": written.min_time.isoformat() if written.min_time else None,
        "max_time": written.max_time.isoformat() if written.max_time else None,
        "net_pnl_sum": str(written.net_pnl) if written.net_pnl is not None else None,
        "slices": {start.isoformat(): count for start, count in written.slices.items()},
    }
    return json.dumps(manifest, indent=2).encode()


async def restore(store: ObjectStore, month: date, tables: Sequence[str] | None,
                  into: Path) -> list[tuple[str, int, Path]]:
    """Download a month's parts of each table (checked against their manifests) into
    ``into/<table>/year=YYYY/month=MM/``; per table, the rows and where they are."""
    restored = []
    for table in tables or list(TABLES):
        prefix = f"{table}/year={month.year:04d}/month={month.month:02d}/"
        # the parts a manifest vouches for (one without is a run's unfinished upload)
        keys = sorted(k.removesuffix(".json") for k in await store.keys(prefix)
                      if k.endswith(".parquet.json"))
        rows = 0
        for key in keys:
            target = into / key
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = await store.download(key, target)
            manifest_path = target.with_name(target.name + ".json")
            await store.download(key + ".json", manifest_path)
            manifest = json.loads(manifest_path.read_text())
            if manifest["sha256"] != digest:
                raise ArchiveError(f"{key}: sha256 {digest} differs from its manifest's")
            rows += pq.read_metadata(target).num_rows
        restored.append((table, rows, into / prefix))
    return restored
