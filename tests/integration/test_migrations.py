"""The migration runner on a real PostgreSQL: idempotent, exactly-once under a race, refuses edits."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from consumers.errors import MigrationError
from consumers.platform import migrations
from tests.support.cie import run_cie
from tests.support.stack import Stack


async def run_cli(*args: str, database: str, stack: Stack) -> tuple[int, str]:
    return await run_cie(*args, env={"DATABASE_URL": database,
                                     "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
                                     "CIE_LOG_FORMAT": "json"})


async def ledger(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT filename, outcome FROM schema_migrations ORDER BY filename")
    finally:
        await conn.close()


async def test_second_migrate_is_a_no_op(plain_db: str, stack: Stack) -> None:
    before = await ledger(plain_db)
    code, out = await run_cli("migrate", database=plain_db, stack=stack)
    assert code == 0, out
    assert "schema is up to date" in out
    assert await ledger(plain_db) == before


async def test_two_migrations_started_together_apply_each_file_once(
    empty_db: str, stack: Stack
) -> None:
    (code_a, out_a), (code_b, out_b) = await asyncio.gather(
        run_cli("migrate", database=empty_db, stack=stack),
        run_cli("migrate", database=empty_db, stack=stack),
    )
    assert (code_a, code_b) == (0, 0), out_a + out_b
    files = [m.filename for m in migrations.load_migrations()]
    assert [r["filename"] for r in await ledger(empty_db)] == sorted(files)
    # exactly one of the two did the work; the other found it done
    assert sorted(["schema is up to date" in out_a, "schema is up to date" in out_b]) == [False, True]


async def test_dry_run_lists_without_applying(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        steps = await migrations.migrate(conn, dry_run=True, use_timescaledb=False)
        assert [s.filename for s in steps] == [m.filename for m in migrations.load_migrations()]
        assert {s.action for s in steps} == {"apply", "skip"}
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
        assert await conn.fetchval("SELECT to_regclass('trade_outcomes')") is None
    finally:
        await conn.close()


async def test_plain_path_records_timescaledb_files_as_skipped(plain_db: str) -> None:
    outcomes = {r["filename"]: r["outcome"] for r in await ledger(plain_db)}
    for migration in migrations.load_migrations():
        expected = "skipped" if migration.requires is migrations.Requires.TIMESCALEDB else "applied"
        assert outcomes[migration.filename] == expected, migration.filename


async def test_edited_applied_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    shutil.copytree(str(migrations.SCHEMA), schema, ignore=shutil.ignore_patterns("queries", "seed"))
    conn = await asyncpg.connect(empty_db)
    try:
        await migrations.migrate(conn, use_timescaledb=False,
                                 migrations=migrations.load_migrations(schema))
        edited = schema / "03-create-indexes.sql"
        edited.write_text(edited.read_text() + "\nCREATE INDEX sneaky ON ab_tests(test_name);\n")
        with pytest.raises(MigrationError, match=r"03-create-indexes\.sql was edited after it was applied"):
            await migrations.migrate(conn, migrations=migrations.load_migrations(schema))
        assert await conn.fetchval("SELECT to_regclass('sneaky')") is None
    finally:
        await conn.close()


async def test_status_shows_each_file(plain_db: str, stack: Stack) -> None:
    code, out = await run_cli("migrate", "--status", database=plain_db, stack=stack)
    assert code == 0, out
    lines = [line.split() for line in out.strip().splitlines()]
    assert {line[-1] for line in lines} == {m.filename for m in migrations.load_migrations()}
    assert {line[0] for line in lines} == {"applied", "skipped"}


async def test_failed_migration_rolls_back_and_is_not_recorded(empty_db: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    schema.mkdir()
    (schema / "01-good.sql").write_text("CREATE TABLE good (x int);\n")
    (schema / "02-bad.sql").write_text("CREATE TABLE half (x int);\nSELECT no_such_function();\n")
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(MigrationError, match=r"02-bad\.sql"):
            await migrations.migrate(conn, migrations=migrations.load_migrations(schema))
        assert await conn.fetchval("SELECT to_regclass('good') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert [r["filename"] for r in await ledger(empty_db)] == ["01-good.sql"]
    finally:
        await conn.close()


async def test_unknown_directive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "01-x.sql").write_text("-- cie: requires oracle\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="unknown directive"):
        migrations.load_migrations(tmp_path)


async def test_database_keeps_the_path_it_took(timescale_db: str) -> None:
    conn = await asyncpg.connect(timescale_db)
    try:
        with pytest.raises(MigrationError, match="TimescaleDB path already"):
            await migrations.migrate(conn, use_timescaledb=False)
    finally:
        await conn.close()


async def test_commands_refuse_a_schema_older_than_their_code(plain_db: str, stack: Stack) -> None:
    """As after an upgrade whose migrate Job has not run yet: the newest migration is not in
    the ledger. Each command stops at start with one line naming it, and runs once migrated."""
    newest = migrations.load_migrations()[-1].filename
    conn = await asyncpg.connect(plain_db)
    try:
        recorded = await conn.fetchrow("DELETE FROM schema_migrations WHERE filename = $1 "
                                       "RETURNING *", newest)
    finally:
        await conn.close()
    for command in (["consume"], ["validate", "--once"], ["rollup"], ["maintain"]):
        code, out = await run_cli(*command, database=plain_db, stack=stack)
        assert code == 1, out
        [line] = [line for line in out.splitlines() if "command.failed" in line]
        assert f"schema is behind this version: {newest} (pending)" in line
        assert "run `cie migrate`" in line
    # once the ledger has it again (as `cie migrate` records it), the same command runs
    conn = await asyncpg.connect(plain_db)
    try:
        columns = ", ".join(recorded.keys())
        values = ", ".join(f"${i}" for i in range(1, len(recorded) + 1))
        await conn.execute(f"INSERT INTO schema_migrations ({columns}) VALUES ({values})",
                           *recorded.values())
    finally:
        await conn.close()
    code, out = await run_cli("rollup", database=plain_db, stack=stack)
    assert code == 0, out
