"""Cold storage against the real S3 server (SeaweedFS, deploy/local/stack.sh) and database,
on both schema paths: months past retention archived to Parquet and verified, then removed by
retention (cie maintain on plain PostgreSQL, the drop job on TimescaleDB), read back equal to
what was removed (every column, exact decimals); a re-run writes nothing; a run that dies
after its upload leaves nothing counted, and the next one writes the same object; a row added
or changed in an archived month is archived again before it may go, even one changed while
retention waits for it; no object is ever replaced; a restore reads what a reader must."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumers.archive import archiver
from consumers.archive.store import Location, ObjectStore, sha256_of
from consumers.platform import maintenance
from consumers.platform.db import connect
from tests.support.cie import cie_environment
from tests.support.clock import TODAY
from tests.support.stack import Bucket

OLD = date(TODAY.year - 6, 3, 1)  # past the 5-year retention
OLDER = date(TODAY.year - 6, 2, 1)
OPTIONS = archiver.ArchiveSettings(horizon=None, batch_rows=7)  # several row groups per part


@dataclass
class Cold:
    db: asyncpg.Connection
    store: ObjectStore
    tmp: Path

    async def archive(self) -> list[archiver.Part]:
        return await archiver.archive(self.db, self.store, OPTIONS)

    async def retention(self) -> None:
        """What production runs: cie maintain on plain PostgreSQL, the job on TimescaleDB."""
        job = await self.db.fetchval(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'cie_drop_archived_chunks'"
        ) if await self.db.fetchval(
            "SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL") else None
        if job is None:
            await maintenance.maintain(self.db)
        else:
            await self.db.execute("CALL run_job($1)", job)

    async def add_trade(self, at: datetime, net: str, *, late: bool = False) -> uuid.UUID:
        trade_id = uuid.uuid4()
        await self.db.execute(
            """INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol,
                   direction, entry_time, exit_time, entry_price, exit_price, quantity,
                   net_pnl, gross_pnl, outcome_type)
               VALUES ($1, $4, 'dir-v1', 'AAPL', 'LONG', $2::timestamptz, $2::timestamptz + interval '1 hour',
                       187.12345678, 188.5, 10, $3::numeric, $3::numeric + 0.35,
                       CASE WHEN $3::numeric > 0 THEN 'WIN' ELSE 'LOSS' END)""",
            trade_id, at, net, "late" if late else "momentum")
        await self.db.execute(
            """INSERT INTO trade_fills (fill_id, trade_id, strategy_id, model_version, symbol,
                   side, quantity, price, commission, filled_at)
               VALUES ($1, $2, 'momentum', 'dir-v1', 'AAPL', 'BUY', 10, 187.12345678, 0.35,
                       $3)""", uuid.uuid4(), trade_id, at)
        return trade_id

    async def rows(self, table: str, month: date) -> list[dict[str, Any]]:
        start, end = archiver.month_bounds(month)
        time_column, (key, _) = archiver.TABLES[table]
        records = await self.db.fetch(
            f'SELECT * FROM {table} WHERE "{time_column}" >= $1 AND "{time_column}" < $2 '
            f'ORDER BY "{time_column}", "{key}"', start, end)
        return [_comparable(dict(r)) for r in records]

    async def read_back(self, table: str, month: date) -> list[dict[str, Any]]:
        """Every archived part of the month, as pyarrow reads it from S3."""
        rows: list[dict[str, Any]] = []
        for table_, _, directory in await archiver.restore(self.store, month, [table],
                                                           self.tmp / uuid.uuid4().hex, self.db):
            assert table_ == table
            for path in sorted(directory.glob("*.parquet")):
                rows.extend(pq.read_table(path).to_pylist())
        time_column, (key, _) = archiver.TABLES[table]
        return sorted(rows, key=lambda r: (r[time_column], r[key]))


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as Parquet holds it: UUIDs as text, the rest as it is."""
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in row.items()}


@pytest.fixture
async def cold(any_db: str, bucket: Bucket, tmp_path: Path) -> AsyncIterator[Cold]:
    db = await connect(any_db)
    yield Cold(db, ObjectStore(Location.parse(bucket.url)), tmp_path)
    await db.close()


def at(month: date, day: int, hour: int = 10) -> datetime:
    return datetime(month.year, month.month, day, hour, tzinfo=UTC)


async def test_archive_verify_remove_and_read_back_exactly(cold: Cold) -> None:
    for day in range(1, 29, 3):
        await cold.add_trade(at(OLD, day), f"{day * 3 - 20}.1234")
        await cold.add_trade(at(OLDER, day, 15), "-7.5000")
    recent = await cold.add_trade(datetime.now(UTC) - timedelta(days=1), "1")
    before = {(t, m): await cold.rows(t, m) for t in archiver.TABLES for m in (OLD, OLDER)}
    assert len(before[("trade_outcomes", OLD)]) == 10

    await cold.retention()  # not archived yet: nothing past retention may go
    assert await cold.rows("trade_outcomes", OLD) == before[("trade_outcomes", OLD)]

    parts = await cold.archive()
    assert rows_per_month(parts) == {
        ("trade_fills", OLDER): 10, ("trade_fills", OLD): 10,
        ("trade_outcomes", OLDER): 10, ("trade_outcomes", OLD): 10}
    for part in parts:  # one part a slice (a month; a chunk's share of it on TimescaleDB)
        assert re.fullmatch(rf"{part.table}/year={part.month.year}/month={part.month.month:02d}"
                            rf"/part-{part.part:05d}-[0-9a-f]{{16}}\.parquet", part.key), part
    recorded = await cold.db.fetchval(
        "SELECT sum(net_pnl_sum) FROM archive_parts "
        "WHERE table_name = 'trade_outcomes' AND month = $1", OLD)
    assert recorded == sum(r["net_pnl"] for r in before[("trade_outcomes", OLD)])

    await cold.retention()
    for (table, month), rows in before.items():
        assert await cold.rows(table, month) == [], (table, month)  # removed ...
        assert await cold.read_back(table, month) == rows  # ... and all there, exactly
    assert await cold.db.fetchval("SELECT count(*) FROM trade_outcomes WHERE trade_id = $1",
                                  recent) == 1
    outcome = (await cold.read_back("trade_outcomes", OLD))[0]
    assert outcome["entry_price"] == Decimal("187.12345678")  # DECIMAL(18, 8), not a float
    schema = pq.read_schema(next((cold.tmp).rglob("trade_outcomes/**/*.parquet")))
    assert str(schema.field("net_pnl").type) == "decimal128(18, 4)"
    assert str(schema.field("entry_time").type) == "timestamp[us, tz=UTC]"

    assert await cold.archive() == []  # a re-run writes nothing


def rows_per_month(parts: list[archiver.Part]) -> dict[tuple[str, date], int]:
    totals: dict[tuple[str, date], int] = {}
    for part in parts:
        totals[(part.table, part.month)] = totals.get((part.table, part.month), 0) + part.rows
    return totals


async def test_a_run_that_dies_after_its_upload_counts_nothing_and_the_next_writes_the_same(
    cold: Cold, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for day in (2, 9, 16):
        await cold.add_trade(at(OLD, day), "3.5")
    download = ObjectStore.download

    async def dies(self: ObjectStore, key: str, path: Path) -> str:
        raise ConnectionError("killed after the upload, before its verification")

    monkeypatch.setattr(ObjectStore, "download", dies)
    with pytest.raises(ConnectionError):
        await cold.archive()
    monkeypatch.setattr(ObjectStore, "download", download)
    [key] = await cold.store.keys("trade_outcomes/")  # uploaded, not counted:
    assert await cold.db.fetchval("SELECT count(*) FROM archive_parts") == 0
    orphan = await cold.store.download(key, cold.tmp / "orphan.parquet")
    await cold.retention()
    assert len(await cold.rows("trade_outcomes", OLD)) == 3  # so nothing was removed

    parts = await cold.archive()
    assert rows_per_month(parts) == {("trade_outcomes", OLD): 3, ("trade_fills", OLD): 3}
    assert key in {p.key for p in parts}  # the same name, the same bytes
    assert await cold.store.download(key, cold.tmp / "again.parquet") == orphan
    assert sorted(await cold.store.keys("trade_outcomes/")) == sorted(
        k for p in parts if p.table == "trade_outcomes" for k in (p.key, p.key + ".json"))


async def test_a_run_that_dies_before_the_manifest_has_it_written_by_the_next(
    cold: Cold, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The part is recorded (retention may remove its rows), its manifest not yet written:
    the next run writes it from the database's record, and writes nothing else."""
    await cold.add_trade(at(OLD, 2), "3.5")
    create_bytes = ObjectStore.create_bytes

    async def dies(self: ObjectStore, data: bytes, key: str) -> bool:
        raise ConnectionError("killed after the part was recorded, before its manifest")

    monkeypatch.setattr(ObjectStore, "create_bytes", dies)
    with pytest.raises(ConnectionError):
        await cold.archive()
    monkeypatch.setattr(ObjectStore, "create_bytes", create_bytes)
    [key] = await cold.store.keys("trade_outcomes/")
    assert await cold.db.fetchval("SELECT manifest_at FROM archive_parts "
                                  "WHERE object_key = $1", key) is None
    await cold.retention()
    assert await cold.rows("trade_outcomes", OLD) == []  # it was recorded: S3 holds it

    parts = await cold.archive()  # the fills' part, and the trade's manifest
    assert [p.table for p in parts] == ["trade_fills"]
    assert sorted(await cold.store.keys("trade_outcomes/")) == [key, key + ".json"]
    manifest = json.loads(await cold.store.read(key + ".json"))
    assert (manifest["object"], manifest["rows"]) == (key, 1)
    [row] = await cold.read_back("trade_outcomes", OLD)
    assert row["net_pnl"] == Decimal("3.5")


async def test_a_late_trade_in_an_archived_month_is_archived_before_it_goes(cold: Cold) -> None:
    for day in (3, 10):
        await cold.add_trade(at(OLD, day), "2")
    await cold.archive()
    late = await cold.add_trade(at(OLD, 20), "-1.25", late=True)  # archived, not yet removed
    await cold.retention()  # what holds the late trade (a month, or a chunk) stays
    assert str(late) in {r["trade_id"] for r in await cold.rows("trade_outcomes", OLD)}

    parts = await cold.archive()
    assert {(p.table, p.month) for p in parts} == {("trade_outcomes", OLD), ("trade_fills", OLD)}
    await cold.retention()
    assert await cold.rows("trade_outcomes", OLD) == []

    later = await cold.add_trade(at(OLD, 25), "4", late=True)  # after the month was removed
    await cold.retention()
    assert [r["trade_id"] for r in await cold.rows("trade_outcomes", OLD)] == [str(later)]
    [part] = [p for p in await cold.archive() if p.table == "trade_outcomes"]
    assert part.rows == 1  # a new epoch of its slice: the earlier parts stay current
    await cold.retention()
    assert await cold.rows("trade_outcomes", OLD) == []
    archived = [r["trade_id"] for r in await cold.read_back("trade_outcomes", OLD)]
    assert len(archived) == 4 and {str(late), str(later)} <= set(archived)


async def test_a_row_changed_after_archiving_is_archived_again_before_it_goes(
    cold: Cold,
) -> None:
    """The validator's excursions and the fills upsert change archived rows in place, and a
    late earlier fill re-keys a trade: the count stays, the content does not. S3 must end up
    with the rows as they were when removed, and nothing of the old versions."""
    trades = [await cold.add_trade(at(OLD, day), f"{day}.5") for day in (2, 9, 16, 23)]
    await cold.archive()
    await cold.db.execute("UPDATE trade_outcomes SET max_favorable_excursion = 12.3456 "
                          "WHERE trade_id = $1", trades[0])
    async with cold.db.transaction():  # re-keyed: an earlier entry time, the same month
        await cold.db.execute("CREATE TEMP TABLE moved ON COMMIT DROP AS "
                              "SELECT * FROM trade_outcomes WHERE trade_id = $1", trades[2])
        await cold.db.execute("DELETE FROM trade_outcomes WHERE trade_id = $1", trades[2])
        await cold.db.execute("UPDATE moved SET entry_time = entry_time - interval '3 days'")
        await cold.db.execute("INSERT INTO trade_outcomes SELECT * FROM moved")
    final = await cold.rows("trade_outcomes", OLD)
    await cold.retention()  # what holds a changed row (a month, or a chunk) stays
    assert {str(trades[0]), str(trades[2])} <= {
        r["trade_id"] for r in await cold.rows("trade_outcomes", OLD)}

    assert await cold.archive()  # written again
    await cold.retention()
    assert await cold.rows("trade_outcomes", OLD) == []
    assert await cold.read_back("trade_outcomes", OLD) == final
    [changed] = [r for r in final if r["trade_id"] == str(trades[0])]
    assert changed["max_favorable_excursion"] == Decimal("12.3456")


async def test_a_row_changed_while_retention_waits_for_it_is_not_removed(
    cold: Cold, any_db: str,
) -> None:
    """Check and removal are one: a row updated, and a row inserted, by a transaction that
    retention has to wait for are compared as they are once it commits, not as they were
    counted before."""
    trades = [await cold.add_trade(at(OLD, day), "1.5") for day in (4, 5)]
    await cold.archive()
    expected = [{**r, "max_adverse_excursion": Decimal("-4.25")}
                if r["trade_id"] == str(trades[1]) else r
                for r in await cold.rows("trade_outcomes", OLD)]
    writer = await connect(any_db)
    try:
        update = writer.transaction()
        await update.start()
        await writer.execute("UPDATE trade_outcomes SET max_adverse_excursion = -4.25 "
                             "WHERE trade_id = $1", trades[1])
        late = await Cold(writer, cold.store, cold.tmp).add_trade(at(OLD, 5, 18), "2", late=True)
        retention = asyncio.create_task(cold.retention())
        await waits_for_a_lock(writer)
        await update.commit()
        await asyncio.wait_for(retention, 60)
    finally:
        await writer.close()
    kept = await cold.rows("trade_outcomes", OLD)
    assert [r["max_adverse_excursion"] for r in kept if r["trade_id"] == str(trades[1])] == [
        Decimal("-4.25")]
    assert str(late) in {r["trade_id"] for r in kept}  # inserted meanwhile: kept too
    expected = sorted(expected + [r for r in kept if r["trade_id"] == str(late)],
                      key=lambda r: (r["entry_time"], r["trade_id"]))
    await cold.archive()
    await cold.retention()
    assert await cold.rows("trade_outcomes", OLD) == []
    assert await cold.read_back("trade_outcomes", OLD) == expected


async def waits_for_a_lock(conn: asyncpg.Connection, seconds: float = 30) -> None:
    """Until another session of this database waits for a lock (bounded)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"):
        assert asyncio.get_running_loop().time() < deadline, "nobody waited for the lock"
        await asyncio.sleep(0.05)


async def test_an_unknown_part_in_the_prefix_is_refused_and_never_replaced(
    cold: Cold,
) -> None:
    """A database restored to an earlier time (or another environment on the same prefix)
    does not know parts already in S3: writing on would reuse their numbers. The archiver
    refuses until told to adopt them, and then writes under new names beside them."""
    trade = await cold.add_trade(at(OLD, 6), "2.25")
    first = [p for p in await cold.archive() if p.table == "trade_outcomes"]
    originals = {p.key: await cold.store.download(p.key, cold.tmp / f"{p.part}.parquet")
                 for p in first}
    async with cold.db.transaction():  # what a point-in-time restore from before it holds
        await cold.db.execute("DELETE FROM archive_parts")
        await cold.db.execute("DELETE FROM archive_slices")
        await cold.db.execute("UPDATE trade_outcomes SET net_pnl = 3.75 WHERE trade_id = $1",
                              trade)
    with pytest.raises(archiver.ArchiveError, match="does not know"):
        await cold.archive()
    await cold.retention()
    assert len(await cold.rows("trade_outcomes", OLD)) == 1

    adopted = await archiver.archive(cold.db, cold.store, archiver.ArchiveSettings(None, 7, adopt=True))
    assert {p.table for p in adopted} == {"trade_outcomes", "trade_fills"}
    assert not {p.key for p in adopted} & set(originals)
    assert min(p.part for p in adopted if p.table == "trade_outcomes") > max(
        p.part for p in first)
    for key, digest in originals.items():  # untouched
        assert await cold.store.download(key, cold.tmp / "check.parquet") == digest
    await cold.retention()
    [row] = await cold.read_back("trade_outcomes", OLD)
    assert row["net_pnl"] == Decimal("3.75")


async def test_an_existing_object_is_never_replaced(cold: Cold) -> None:
    path = cold.tmp / "a"
    path.write_bytes(b"first")
    assert await cold.store.create(path, "x/one")
    path.write_bytes(b"second")
    assert not await cold.store.create(path, "x/one")  # If-None-Match: *
    assert await cold.store.read("x/one") == b"first"


async def test_the_bucket_versioning_is_recorded_and_exported(cold: Cold, any_db: str) -> None:
    from prometheus_client import REGISTRY

    from consumers.platform import health
    from tests.support.harness import eventually

    await cold.add_trade(at(OLD, 8), "1")
    await cold.archive()
    location = cold.store.location.url
    assert await cold.db.fetchval("SELECT versioning FROM archive_buckets "
                                  "WHERE location = $1", location) != "Enabled"

    async def versioned() -> float | None:
        return REGISTRY.get_sample_value("cie_archive_bucket_versioned",
                                         {"location": location})

    checks = health.Health(any_db, None)
    watcher = asyncio.create_task(checks.watch(every=0.1))
    try:
        assert await eventually(versioned, 0.0) == 0.0
        await asyncio.to_thread(
            cold.store._client.put_bucket_versioning, Bucket=cold.store.location.bucket,
            VersioningConfiguration={"Status": "Enabled"})
        await cold.archive()
        assert await eventually(versioned, 1.0) == 1.0
    finally:
        watcher.cancel()
        await checks.close()


async def test_restore_takes_only_keys_of_the_layout(cold: Cold) -> None:
    """A key with a path the layout does not have is refused before anything is written
    (``..`` in a key: tests/unit/test_archive_keys.py, as this S3 server refuses such keys)."""
    await cold.add_trade(at(OLD, 3), "1")
    [part] = [p for p in await cold.archive() if p.table == "trade_outcomes"]
    prefix = archiver.month_prefix("trade_outcomes", OLD)
    manifest = await cold.store.read(part.key + ".json")
    local = cold.tmp / "part.parquet"
    await cold.store.download(part.key, local)
    evil = prefix + "escaped/part-00009.parquet"  # a folder more than the layout has
    await cold.store.create(local, evil)
    await cold.store.create_bytes(manifest.replace(part.key.encode(), evil.encode()),
                                  evil + ".json")
    into = cold.tmp / "restored"
    with pytest.raises(archiver.ArchiveError, match="not a part of"):
        await archiver.restore(cold.store, OLD, ["trade_outcomes"], into, cold.db)
    assert not into.exists()  # refused before the first download


async def test_restore_checks_each_part_against_the_database(cold: Cold) -> None:
    """Someone who may write to the bucket replaces a part and its manifest alike: the
    manifests agree, the database's SHA-256 does not."""
    await cold.add_trade(at(OLD, 3), "1")
    [part] = [p for p in await cold.archive() if p.table == "trade_outcomes"]
    forged = cold.tmp / "forged.parquet"
    await cold.store.download(part.key, forged)
    table = pq.read_table(forged)
    pq.write_table(table.set_column(table.schema.get_field_index("net_pnl"), "net_pnl",
                                    pa.array([Decimal("999.0000")], table.schema.field(
                                        "net_pnl").type)), forged)
    manifest = json.loads(await cold.store.read(part.key + ".json"))
    manifest["sha256"] = sha256_of(forged)
    await asyncio.to_thread(cold.store._client.put_object, Bucket=cold.store.location.bucket,
                            Key=cold.store.location.key(part.key), Body=forged.read_bytes())
    await asyncio.to_thread(cold.store._client.put_object, Bucket=cold.store.location.bucket,
                            Key=cold.store.location.key(part.key + ".json"),
                            Body=json.dumps(manifest).encode())
    with pytest.raises(archiver.ArchiveError, match="differs from the database"):
        await archiver.restore(cold.store, OLD, ["trade_outcomes"], cold.tmp / "a", cold.db)
    # without the database only the manifests vouch: the forged part reads as they say
    [(_, rows, _)] = await archiver.restore(cold.store, OLD, ["trade_outcomes"], cold.tmp / "b")
    assert rows == 1


async def test_the_archiver_role_archives_and_removes_nothing(cold: Cold) -> None:
    await cold.add_trade(at(OLD, 5), "1.5")
    await cold.db.execute("SET ROLE cie_archiver")
    parts = await cold.archive()
    assert [(p.table, p.rows) for p in parts] == [("trade_outcomes", 1), ("trade_fills", 1)]
    for statement in ("DELETE FROM trade_outcomes", "UPDATE trade_fills SET price = 1",
                      "DELETE FROM archive_parts", "CREATE TABLE sneaky (x int)"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await cold.db.execute(statement)
    await cold.db.execute("RESET ROLE")


async def test_cie_archive_status_and_restore(any_db: str, bucket: Bucket,
                                              tmp_path: Path) -> None:
    db = await connect(any_db)
    try:
        cold = Cold(db, ObjectStore(Location.parse(bucket.url)), tmp_path)
        for day in (4, 11):
            await cold.add_trade(at(OLD, day), "10.0001")
    finally:
        await db.close()
    env = {"DATABASE_URL": any_db, "CIE_LOG_FORMAT": "json", **bucket.environment}

    code, out = await cie(env, "archive")
    assert code == 1 and "CIE_ARCHIVE_URL: required" in out  # says what is missing
    env["CIE_ARCHIVE_URL"] = bucket.url
    code, out = await cie(env, "archive")
    assert code == 0, out
    [done] = [json.loads(line) for line in out.splitlines() if "archive.done" in line]
    assert done["rows"] == 4 and done["parts"] >= 2  # a part a slice, for each table
    assert bucket.environment["AWS_SECRET_ACCESS_KEY"] not in out

    code, out = await cie(env, "archive", "--status")
    assert code == 0, out
    month = f"{OLD:%Y-%m}"
    assert re.search(rf"trade_outcomes  {month}  parts \d  rows 2  ", out), out
    assert "net_pnl 20.0002" in out
    code, out = await cie(env, "archive", "--restore", month, "--table", "trade_outcomes",
                          "--into", str(tmp_path / "restored"))
    assert code == 0, out
    restored = tmp_path / "restored" / f"trade_outcomes/year={OLD.year}/month=03"
    assert f"trade_outcomes {month}: 2 rows in {restored}\n" in out
    values = [str(v) for path in sorted(restored.glob("*.parquet"))
              for v in pq.read_table(path).column("net_pnl").to_pylist()]
    assert values == ["10.0001", "10.0001"]


async def cie(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", *args, env=cie_environment(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return await proc.wait(), out.decode()


async def test_the_consumers_export_what_is_archived_and_how_old_the_oldest_trade_is(
    cold: Cold, any_db: str,
) -> None:
    """`cie archive` runs as a CronJob, never scraped: a long-running consumer's /metrics
    exports the archive's rows and bytes, and the oldest trade kept against its retention
    (CieArchiveBehindRetention)."""
    from prometheus_client import REGISTRY

    from consumers.platform import health
    from tests.support.harness import eventually

    oldest = at(OLD, 2)
    for day in (2, 9, 16):
        await cold.add_trade(at(OLD, day), "1")
    await cold.archive()
    await cold.add_trade(at(OLD, 20), "1", late=True)  # archived later: the oldest stays

    async def exported() -> tuple[float | None, ...]:
        return tuple(REGISTRY.get_sample_value(name, {"table": table}) for name, table in (
            ("cie_archived_rows", "trade_outcomes"), ("cie_archived_rows", "trade_fills"),
            ("cie_oldest_row_timestamp_seconds", "trade_outcomes")))

    expected = (3.0, 3.0, oldest.timestamp())
    checks = health.Health(any_db, None)
    watcher = asyncio.create_task(checks.watch(every=0.1))
    try:
        assert await eventually(exported, expected) == expected
    finally:
        watcher.cancel()
        await checks.close()
    assert REGISTRY.get_sample_value("cie_retention_seconds", {"table": "trade_outcomes"}) == (
        await cold.db.fetchval("SELECT extract(epoch FROM keep_for)::float8 "
                               "FROM retention_rules WHERE table_name = 'trade_outcomes'"))
    assert REGISTRY.get_sample_value("cie_archived_bytes", {"table": "trade_outcomes"}) > 0
