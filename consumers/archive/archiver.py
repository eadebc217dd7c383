"""`cie archive`: trade_outcomes and trade_fills months past the archive horizon, to Parquet in
S3, each object verified by reading it back before anything may be removed.

The unit is the *slice*, what retention removes at once: a month on plain PostgreSQL (`cie
maintain` deletes months), a chunk's share of a month on TimescaleDB (its drop job drops
chunks). For each table and each UTC month that ended before ``now - horizon`` (default: the
table's retention, 5 years), each slice whose rows differ from what S3 holds for it (count or
checksum, ``archive_slices``; cie_slice_content in migration 20) is written again, whole:

1. In one REPEATABLE READ snapshot its content is summed and its rows streamed from a
   server-side cursor (``CONVERT_ROWS`` at a time, ``batch_rows`` to a Parquet row group, so
   memory stays bounded) into a file (zstd, exact types: consumers/archive/parquet.py).
2. The file goes to ``<prefix>/<table>/year=YYYY/month=MM/part-NNNNN-<sha256>.parquet``
   (Hive-style: DuckDB, Spark, Athena and pandas read the tree) as a new object only, is read
   back and checked (SHA-256, row count, the sum of net_pnl), and one transaction records the
   part and the slice's new content. Retention compares that content with what it removes.
3. Its manifest (``.json``) goes beside it; a run that dies first leaves it to the next run.

A part holds every row of one slice for one *epoch* (the rows written between two removals of
that slice). What a reader reads, and what ``restore`` applies: for each (slice, epoch) the
latest part; where a key is in more than one of those (a row written again after its removal),
the latest part's row. Nothing is ever overwritten: names carry the content's hash, puts are
conditional, and a month whose prefix holds manifests the database does not know (a restored
database, another environment on the same bucket) is refused unless ``adopt`` records them.
One run at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from consumers.archive import parquet
from consumers.archive.store import ObjectStore, sha256_of
from consumers.errors import CieError
from consumers.platform.db import Conn, queries
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

# The tables archived: their time column and key (a part's rows are told apart by it).
TABLES: dict[str, tuple[str, tuple[str, str]]] = {
    "trade_outcomes": ("entry_time", ("trade_id", "entry_time")),
    "trade_fills": ("filled_at", ("fill_id", "filled_at")),
}
LOCK_KEY = 0x43494541  # pg_advisory_lock: one archive run at a time ("CIEA")
CONVERT_ROWS = 5_000  # rows fetched and turned into Arrow at once
# A part's name within its month: part-NNNNN.parquet before migration 20, then with the first
# 16 hex digits of its SHA-256.
PART_NAME = re.compile(r"part-(\d{5})(?:-[0-9a-f]{16})?\.parquet")


class ArchiveError(CieError):
    """An uploaded object did not read back as written, or the bucket holds what this database
    does not know: nothing is recorded, nothing removed."""


@dataclass(frozen=True)
class ArchiveSettings:
    horizon: timedelta | None  # None: each table's retention (retention_rules)
    batch_rows: int  # rows per Parquet row group (fetched CONVERT_ROWS at a time)
    adopt: bool = False  # record manifests this database does not know instead of refusing

    @classmethod
    def from_settings(cls, settings: Settings, *, adopt: bool = False) -> ArchiveSettings:
        horizon = (timedelta(days=settings.archive_horizon_days)
                   if settings.archive_horizon_days else None)
        return cls(horizon, settings.archive_batch_rows, adopt)


@dataclass(frozen=True)
class Part:
    table: str
    month: date
    part: int
    key: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Slice:
    """What retention removes at once, in one month: its rows now (count, checksum), and what
    S3 holds for its current epoch. Up to date when the two agree."""

    start: datetime
    end: datetime
    rows: int
    checksum: Decimal
    archived_rows: int
    archived_checksum: Decimal | None  # None: unknown (archived before migration 20)
    epoch: int

    @property
    def behind(self) -> bool:
        if self.rows == 0 and self.archived_rows == 0:
            return False
        return (self.rows, self.checksum) != (self.archived_rows, self.archived_checksum)


@dataclass
class _Written:
    rows: int = 0
    min_time: datetime | None = None
    max_time: datetime | None = None
    net_pnl: Decimal | None = None


async def archive(conn: Conn, store: ObjectStore, options: ArchiveSettings) -> list[Part]:
    """Archive every table's due months; the parts written (none when all is archived)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        raise CieError("another cie archive is running (advisory lock held)")
    try:
        await _check_versioning(conn, store)
        await _write_missing_manifests(conn, store)
        parts = []
        for table in TABLES:
            rule = await conn.fetchrow(queries("archive")["rule"], table)
            assert rule is not None, table
            horizon = options.horizon or rule["keep_for"]
            due = queries("archive")["due_months"].format(
                table=f'"{table}"', time=f'"{TABLES[table][0]}"')
            for row in await conn.fetch(due, horizon, table):
                parts.extend(await archive_month(conn, store, table, row["month"], options))
        return parts
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def archive_month(conn: Conn, store: ObjectStore, table: str, month: date,
                        options: ArchiveSettings) -> list[Part]:
    await _check_prefix(conn, store, table, month, adopt=options.adopt)
    parts = []
    for start, end in await month_slices(conn, table, month):
        part = await _archive_slice(conn, store, table, month, start, end, options.batch_rows)
        if part is not None:
            parts.append(part)
    return parts


def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return start, datetime(following.year, following.month, 1, tzinfo=UTC)


def month_prefix(table: str, month: date) -> str:
    return f"{table}/year={month.year:04d}/month={month.month:02d}/"


async def month_slices(conn: Conn, table: str,
                       month: date) -> list[tuple[datetime, datetime]]:
    """The month's slices, as ranges: its share of each TimescaleDB chunk (the drop job removes
    chunks), or the whole month on plain PostgreSQL (`cie maintain` deletes months); and the
    slices recorded before whose chunk is gone (their rows may have moved elsewhere)."""
    sql = queries("archive")
    start, end = month_bounds(month)
    ranges = {(start, end)}
    if (await conn.fetchval(sql["timescaledb_here"])
            and await conn.fetchval(sql["is_hypertable"], table)):
        ranges = {(r["slice_start"], r["slice_end"])
                  for r in await conn.fetch(sql["month_chunks"], table, start, end)}
    ranges.update((r["slice_start"], r["slice_end"])
                  for r in await conn.fetch(sql["month_slices_recorded"], table, start, end))
    return sorted(ranges)


async def _slice(conn: Conn, table: str, start: datetime, end: datetime) -> Slice:
    sql = queries("archive")
    content = await conn.fetchrow(sql["slice_content"], table, TABLES[table][0], start, end)
    recorded = await conn.fetchrow(sql["slice_state"], table, start)
    assert content is not None
    return Slice(start, end, content["row_count"], content["checksum"],
                 recorded["live_rows"] if recorded else 0,
                 recorded["live_checksum"] if recorded else Decimal(0),
                 recorded["epoch"] if recorded else 0)


async def _archive_slice(conn: Conn, store: ObjectStore, table: str, month: date,
                         start: datetime, end: datetime, batch_rows: int) -> Part | None:
    """The slice written again when its rows differ from what S3 holds: its content is summed
    once, in the snapshot its rows are exported from."""
    sql = queries("archive")
    with tempfile.TemporaryDirectory(prefix="cie-archive-") as tmp:
        local = Path(tmp) / "part.parquet"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            now = await _slice(conn, table, start, end)
            if not now.behind:
                return None
            number = await conn.fetchval(sql["next_part"], table, month)
            written = await _export(conn, table, now, local, batch_rows)
        if written.rows != now.rows:
            raise ArchiveError(f"{table} {now.start}: {written.rows} rows exported, "
                               f"{now.rows} counted in the same snapshot")
        digest = sha256_of(local)
        key = month_prefix(table, month) + f"part-{number:05d}-{digest[:16]}.parquet"
        await _upload_and_verify(store, local, key, written, digest, Path(tmp))
        size = local.stat().st_size
    async with conn.transaction():
        epoch = await conn.fetchval(sql["lock_slice"], table, now.start)
        if (epoch or 0) != now.epoch:  # removed meanwhile: what was exported is stale
            log.warning("archive.slice_removed_meanwhile", table=table,
                        slice_start=now.start.isoformat(), key=key)
            return None
        await conn.execute(sql["record_part"], table, month, number, key, written.rows,
                           written.min_time, written.max_time, written.net_pnl, size, digest,
                           now.start, now.end, now.epoch, now.checksum, None)
        await conn.execute(sql["record_slice"], table, now.start, now.end, now.rows,
                           now.checksum, now.epoch)
    await _put_manifest(conn, store, key)
    log.info("archive.part_written", table=table, month=month.isoformat(), part=number,
             key=key, rows=written.rows, bytes=size, sha256=digest,
             slice_start=now.start.isoformat(), epoch=now.epoch)
    return Part(table, month, number, key, written.rows, size)


async def _export(conn: Conn, table: str, piece: Slice, path: Path,
                  batch_rows: int) -> _Written:
    time_column, key_columns = TABLES[table]
    columns = await parquet.table_columns(conn, table)
    names = [c.name for c in columns]
    time_index = names.index(time_column)
    pnl_index = names.index("net_pnl") if "net_pnl" in names else None
    written = _Written(net_pnl=Decimal(0) if pnl_index is not None else None)
    statement = queries("archive")["slice_rows_ordered"].format(
        columns=", ".join(f'"{n}"' for n in names), table=f'"{table}"',
        time=f'"{time_column}"', key=f'"{key_columns[0]}"')
    # Rows become Arrow a few thousand at a time (a row as Python objects takes many times
    # its Arrow size), and a row group is written once it holds batch_rows of them.
    convert = min(batch_rows, CONVERT_ROWS)
    with pq.ParquetWriter(path, parquet.schema(columns), compression="zstd") as writer:
        rows: list[asyncpg.Record] = []
        group: list[pa.RecordBatch] = []
        async for row in conn.cursor(statement, piece.start, piece.end, prefetch=convert):
            rows.append(row)
            _count(written, row[time_index], row[pnl_index] if pnl_index is not None else None)
            if len(rows) >= convert:
                group.append(parquet.record_batch(columns, rows))
                rows = []
                if sum(b.num_rows for b in group) >= batch_rows:
                    writer.write_table(pa.Table.from_batches(group), row_group_size=batch_rows)
                    group = []
        if rows:
            group.append(parquet.record_batch(columns, rows))
        if group:
            writer.write_table(pa.Table.from_batches(group), row_group_size=batch_rows)
    return written


def _count(written: _Written, at: datetime, net_pnl: Decimal | None) -> None:
    written.rows += 1
    written.min_time = at if written.min_time is None else min(written.min_time, at)
    written.max_time = at if written.max_time is None else max(written.max_time, at)
    if written.net_pnl is not None and net_pnl is not None:
        written.net_pnl += net_pnl


async def _upload_and_verify(store: ObjectStore, local: Path, key: str, written: _Written,
                             digest: str, tmp: Path) -> None:
    if not await store.create(local, key):  # the same bytes from a run that died after it
        log.info("archive.object_exists", key=key)
    back = tmp / "read-back.parquet"
    read_digest = await store.download(key, back)
    problems = []
    if read_digest != digest:
        problems.append(f"sha256 {read_digest} != {digest}")
    rows, total = _rows_and_net_pnl(back, written.net_pnl is not None)
    if rows != written.rows:
        problems.append(f"{rows} rows read back, {written.rows} written")
    if written.net_pnl is not None and total != written.net_pnl:
        problems.append(f"net_pnl sums to {total} read back, {written.net_pnl} written")
    if problems:
        raise ArchiveError(f"{key}: {'; '.join(problems)}")


def _rows_and_net_pnl(path: Path, with_pnl: bool) -> tuple[int, Decimal]:
    """Read back a row group at a time: a month of millions of trades stays in bounded memory."""
    file = pq.ParquetFile(path)
    rows, total = 0, Decimal(0)
    if not with_pnl:
        return file.metadata.num_rows, total
    for batch in file.iter_batches(columns=["net_pnl"]):
        rows += batch.num_rows
        total += pc.sum(batch.column(0)).as_py() or Decimal(0)
    return rows, total


async def _put_manifest(conn: Conn, store: ObjectStore, key: str) -> None:
    """The part's manifest beside it, from what the database recorded, and noted as written."""
    row = await conn.fetchrow(queries("archive")["part_by_key"], key)
    assert row is not None, key
    if not await store.create_bytes(_manifest(row), key + ".json"):
        log.info("archive.manifest_exists", key=key + ".json")
    await conn.execute(queries("archive")["manifest_written"], key)


async def _write_missing_manifests(conn: Conn, store: ObjectStore) -> None:
    for row in await conn.fetch(queries("archive")["parts_without_manifest"]):
        await _put_manifest(conn, store, row["object_key"])


def _manifest(part: asyncpg.Record) -> bytes:
    def text(value: Any) -> str | None:
        return None if value is None else value.isoformat() if hasattr(value, "isoformat") \
            else str(value)
    manifest: dict[str, Any] = {
        "table": part["table_name"], "month": part["month"].strftime("%Y-%m"),
        "part": part["part"], "object": part["object_key"], "rows": part["row_count"],
        "bytes": part["bytes"], "sha256": part["sha256"], "min_time": text(part["min_time"]),
        "max_time": text(part["max_time"]), "net_pnl_sum": text(part["net_pnl_sum"]),
        "slice_start": text(part["slice_start"]), "slice_end": text(part["slice_end"]),
        "epoch": part["epoch"], "checksum": text(part["checksum"]),
    }
    return json.dumps(manifest, indent=2).encode()


async def _check_versioning(conn: Conn, store: ObjectStore) -> None:
    state = await store.versioning()
    await conn.execute(queries("archive")["record_bucket"], store.location.url, state)
    if state != "Enabled":
        log.warning("archive.bucket_versioning_off", bucket=store.location.bucket,
                    versioning=state, why="a deleted or replaced part could not be recovered")


async def _check_prefix(conn: Conn, store: ObjectStore, table: str, month: date, *,
                        adopt: bool) -> None:
    """Refuse a month whose prefix holds manifests this database does not know; with
    ``adopt``, check each such part against its manifest and record it."""
    known = {r["object_key"] for r in await conn.fetch(queries("archive")["month_parts"],
                                                        table, month)}
    manifests = [k for k in await store.keys(month_prefix(table, month))
                 if k.endswith(".parquet.json")]
    unknown = sorted(k.removesuffix(".json") for k in manifests
                     if k.removesuffix(".json") not in known)
    if not unknown:
        return
    if not adopt:
        raise ArchiveError(
            f"{month_prefix(table, month)} holds parts this database does not know "
            f"({', '.join(unknown)}): a database restored to an earlier time, or another "
            "environment writing to the same prefix. Check them, then run cie archive --adopt "
            "to record them (a restored database), or give this environment a prefix of its "
            "own.")
    for key in unknown:
        await _adopt(conn, store, table, month, key)


async def _adopt(conn: Conn, store: ObjectStore, table: str, month: date, key: str) -> None:
    manifest = json.loads(await store.read(key + ".json"))
    with tempfile.TemporaryDirectory(prefix="cie-adopt-") as tmp:
        digest = await store.download(key, Path(tmp) / "part.parquet")
    if manifest.get("object") != key or manifest.get("sha256") != digest:
        raise ArchiveError(f"{key}: its manifest does not describe it; not adopted")
    number = part_number(month_prefix(table, month), key)
    await conn.execute(queries("archive")["record_part"], table, month, number, key,
                       manifest["rows"], _time(manifest["min_time"]),
                       _time(manifest["max_time"]), _decimal(manifest.get("net_pnl_sum")),
                       manifest["bytes"], digest, _time(manifest.get("slice_start")),
                       _time(manifest.get("slice_end")), manifest.get("epoch"),
                       _decimal(manifest.get("checksum")), datetime.now(UTC))
    log.warning("archive.part_adopted", key=key, rows=manifest["rows"])


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


# --- reading back ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Listed:
    key: str
    part: int
    slice_start: str | None  # None: a part from before migration 20, always current
    epoch: int | None
    sha256: str


async def restore(store: ObjectStore, month: date, tables: Sequence[str] | None, into: Path,
                  conn: Conn | None = None) -> list[tuple[str, int, Path]]:
    """The month's current parts of each table into ``into/<table>/year=YYYY/month=MM/``, as a
    reader must take them: for each (slice, epoch) the latest part, and where a key is in more
    than one of those, only the latest part's row. Every key is checked against the layout and
    every part's SHA-256 against its manifest and, given ``conn``, against the database's
    record. Per table: the rows and where they are."""
    restored = []
    root = await asyncio.to_thread(into.resolve)
    for table in tables or list(TABLES):
        if table not in TABLES:
            raise ArchiveError(f"{table}: not an archived table")
        prefix = month_prefix(table, month)
        listed = [await _listed(store, prefix, k, conn) for k in sorted(await store.keys(prefix))
                  if k.endswith(".parquet.json")]
        current = _current(listed)
        rows = 0
        newer_keys: pa.Array | None = None
        for item in sorted(current, key=lambda i: -i.part):  # latest first
            target = (root / item.key).resolve()
            if not target.is_relative_to(root):
                raise ArchiveError(f"{item.key}: outside {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = await store.download(item.key, target)
            if digest != item.sha256:
                raise ArchiveError(f"{item.key}: sha256 {digest} differs from its record's")
            keys = _key_array(target, table)
            rows += _drop_superseded_rows(target, keys, newer_keys)
            newer_keys = keys if newer_keys is None else pa.concat_arrays([newer_keys, keys])
        restored.append((table, rows, root / prefix))
    return restored


def part_number(prefix: str, key: str) -> int:
    """The number of the part ``key`` names in the month ``prefix``; ArchiveError for a key of
    any other shape (``..``, a folder more, another month), which a restore would otherwise
    write wherever it points."""
    number = PART_NAME.fullmatch(key.removeprefix(prefix)) if key.startswith(prefix) else None
    if number is None:
        raise ArchiveError(f"{key!r}: not a part of {prefix} (the layout is "
                           f"{prefix}part-NNNNN-<sha256>.parquet)")
    return int(number.group(1))


async def _listed(store: ObjectStore, prefix: str, manifest_key: str,
                  conn: Conn | None) -> _Listed:
    key = manifest_key.removesuffix(".json")
    number = part_number(prefix, key)
    manifest = json.loads(await store.read(manifest_key))
    if manifest.get("object") != key:
        raise ArchiveError(f"{manifest_key}: describes {manifest.get('object')!r}, not {key}")
    sha256 = str(manifest["sha256"])
    if conn is not None:
        recorded = await conn.fetchval(queries("archive")["part_sha256"], key)
        if recorded is None:
            raise ArchiveError(f"{key}: not recorded in this database (archive_parts)")
        if recorded != sha256:
            raise ArchiveError(f"{key}: its manifest's sha256 differs from the database's")
    return _Listed(key, number, manifest.get("slice_start"),
                   manifest.get("epoch"), sha256)


def _current(listed: list[_Listed]) -> list[_Listed]:
    """For each (slice, epoch), the latest part; parts from before slices all count."""
    latest: dict[tuple[str, int], _Listed] = {}
    current = []
    for item in listed:
        if item.slice_start is None or item.epoch is None:
            current.append(item)
            continue
        slot = (item.slice_start, item.epoch)
        if slot not in latest or latest[slot].part < item.part:
            latest[slot] = item
    return current + list(latest.values())


def _key_array(path: Path, table_name: str) -> pa.Array:
    """Each row's key (the table's primary key) in the part at ``path``, as one string."""
    _, (key, time_key) = TABLES[table_name]
    table = pq.read_table(path, columns=[key, time_key]).combine_chunks()
    joined = pc.binary_join_element_wise(table.column(key).cast(pa.string()),
                                         table.column(time_key).cast(pa.string()), "|")
    return joined.combine_chunks()


def _drop_superseded_rows(path: Path, keys: pa.Array, newer_keys: pa.Array | None) -> int:
    """Rewrite ``path`` (whose rows' keys are ``keys``) without the rows whose key a later
    part holds; its rows left."""
    rows = len(keys)
    if newer_keys is None or len(newer_keys) == 0:
        return rows
    stale = pc.is_in(keys, value_set=newer_keys)
    if not pc.any(stale).as_py():
        return rows
    kept = pq.read_table(path).filter(pc.invert(stale))
    pq.write_table(kept, path, compression="zstd")
    return int(kept.num_rows)
