"""Schema migrations: the numbered ``schema/*.sql`` files, applied in name order, once each.

A DBA can apply the same files with ``psql -1 -f``; this runner adds what a fleet needs:

* a ledger (``schema_migrations``) with each file's SHA-256, so an applied file that was edited
  afterwards is refused instead of silently diverging;
* a PostgreSQL advisory lock, so replicas that start together apply each file exactly once;
* one transaction per file (unless the file says ``-- cie: no-transaction``);
* the TimescaleDB split: a file headed ``-- cie: requires timescaledb`` runs only where the
  extension is in use, one headed ``-- cie: requires plain`` only where it is not. Skipped
  files are recorded as skipped, so the ledger says which path a database took.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources.abc import Traversable

import asyncpg

from consumers.errors import MigrationError, SchemaBehind
from consumers.platform.db import SCHEMA, queries

# Any constant will do; it only has to be the same for every replica of this project.
ADVISORY_LOCK_KEY = 0x43_49_45_5F_4D_49_47  # "CIE_MIG"

_DIRECTIVE = re.compile(r"^--\s*cie:\s*(.+?)\s*$")
_MIGRATION_NAME = re.compile(r"^\d{2,}-[a-z0-9.-]+\.sql$")



class Requires(StrEnum):
    ANY = "any"
    TIMESCALEDB = "timescaledb"
    PLAIN = "plain"


@dataclass(frozen=True)
class Migration:
    filename: str
    sql: str
    checksum: str
    requires: Requires
    transactional: bool

    def applies_to(self, timescaledb: bool) -> bool:
        if self.requires is Requires.ANY:
            return True
        return (self.requires is Requires.TIMESCALEDB) == timescaledb


@dataclass(frozen=True)
class Step:
    """What ``migrate`` did, or would do, with one file."""

    filename: str
    action: str  # "apply", "skip", "applied", "skipped"


def load_migrations(directory: Traversable = SCHEMA) -> list[Migration]:
    """Read every migration file, in the order they apply."""
    migrations = []
    for path in sorted((f for f in directory.iterdir() if f.name.endswith(".sql")),
                       key=lambda f: f.name):
        if not _MIGRATION_NAME.match(path.name):
            raise MigrationError(f"{path.name}: migration names look like 08-what-it-does.sql")
        sql = path.read_text(encoding="utf-8")
        requires, transactional = _parse_directives(path.name, sql)
        migrations.append(
            Migration(
                filename=path.name,
                sql=sql,
                checksum=hashlib.sha256(sql.encode()).hexdigest(),
                requires=requires,
                transactional=transactional,
            )
        )
    return migrations


def _parse_directives(filename: str, sql: str) -> tuple[Requires, bool]:
    requires, transactional = Requires.ANY, True
    for line in sql.splitlines():
        if not line.startswith("--"):
            break  # directives live in the leading comment block
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        directive = match.group(1)
        if directive == "no-transaction":
            transactional = False
        elif directive.startswith("requires "):
            try:
                requires = Requires(directive.removeprefix("requires ").strip())
            except ValueError:
                raise MigrationError(f"{filename}: unknown directive '{directive}'") from None
        else:
            raise MigrationError(f"{filename}: unknown directive '{directive}'")
    return requires, transactional


async def timescaledb_usable(conn: asyncpg.Connection) -> bool:
    """True when TimescaleDB is installed in this database, or can be (available and preloaded)."""
    row = await conn.fetchrow(queries("migrations")["timescaledb_usable"])
    assert row is not None
    if row["installed"] or not row["available"]:
        return bool(row["installed"])
    if row["preloaded"] is None:  # a migration owner that is not a superuser
        raise MigrationError(
            "TimescaleDB is available on this server but not created in this database, and "
            "this role may not read shared_preload_libraries to tell whether it could be: have "
            "a superuser run CREATE EXTENSION timescaledb here (the TimescaleDB path), or "
            "migrate with --without-timescaledb (plain PostgreSQL)")
    return bool(row["preloaded"])


async def migrate(
    conn: asyncpg.Connection,
    *,
    dry_run: bool = False,
    use_timescaledb: bool | None = None,
    migrations: list[Migration] | None = None,
) -> list[Step]:
    """Bring the database up to date; returns one Step per file that was (or would be) run.

    ``use_timescaledb=None`` detects it; False forces the plain-PostgreSQL path (tests use this
    to exercise both paths on one server).
    """
    files = load_migrations() if migrations is None else migrations
    sql = queries("migrations")
    await conn.execute(sql["lock"], ADVISORY_LOCK_KEY)
    try:
        await conn.execute(sql["ledger_create"])
        ledger = await _read_ledger(conn)
        _refuse_edited(files, ledger)
        timescale = await _choose_path(conn, files, ledger, use_timescaledb)
        steps = []
        for migration in files:
            if migration.filename in ledger:
                continue
            apply = migration.applies_to(timescale)
            steps.append(Step(migration.filename, "apply" if apply else "skip"))
            if not dry_run:
                await _run_one(conn, migration, apply)
        return steps
    finally:
        await conn.execute(sql["unlock"], ADVISORY_LOCK_KEY)


async def status(conn: asyncpg.Connection) -> list[Step]:
    """Every known file with its state: applied, skipped, pending or edited."""
    files = load_migrations()
    exists = await conn.fetchval(queries("migrations")["ledger_exists"])
    ledger = await _read_ledger(conn) if exists else {}
    steps = []
    for migration in files:
        entry = ledger.get(migration.filename)
        if entry is None:
            steps.append(Step(migration.filename, "pending"))
        elif entry[0] != migration.checksum:
            steps.append(Step(migration.filename, "EDITED after it was applied"))
        else:
            steps.append(Step(migration.filename, entry[1]))
    return steps


async def require_current(conn: asyncpg.Connection) -> None:
    """Raise SchemaBehind unless every migration this image ships has been applied (or
    skipped for the other path) as it is: a process must not run against tables older than
    its code, say before the migrate Job of an upgrade has finished."""
    behind = [step for step in await status(conn) if step.action not in ("applied", "skipped")]
    if behind:
        names = ", ".join(f"{step.filename} ({step.action})" for step in behind)
        raise SchemaBehind(f"the database schema is behind this version: {names}; run "
                           "`cie migrate` (the migrate Job) first")


async def _read_ledger(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    rows = await conn.fetch(queries("migrations")["ledger_read"])
    return {row["filename"]: (row["checksum"], row["outcome"]) for row in rows}


def _refuse_edited(files: list[Migration], ledger: dict[str, tuple[str, str]]) -> None:
    for migration in files:
        entry = ledger.get(migration.filename)
        if entry is not None and entry[0] != migration.checksum:
            raise MigrationError(
                f"{migration.filename} was edited after it was applied (checksum in the "
                f"ledger {entry[0][:12]}…, on disk {migration.checksum[:12]}…); restore it and "
                "put the change in a new migration file"
            )


async def _choose_path(
    conn: asyncpg.Connection,
    files: list[Migration],
    ledger: dict[str, tuple[str, str]],
    requested: bool | None,
) -> bool:
    """Keep the path a database already took; otherwise detect (or obey the caller)."""
    applied_ts = [
        m.filename for m in files if m.requires is Requires.TIMESCALEDB and m.filename in ledger
    ]
    if applied_ts:
        took_timescale = any(ledger[name][1] == "applied" for name in applied_ts)
        if requested is not None and requested != took_timescale:
            path = "TimescaleDB" if took_timescale else "plain PostgreSQL"
            raise MigrationError(f"this database was migrated on the {path} path already")
        return took_timescale
    if requested is not None:
        return requested
    return await timescaledb_usable(conn)


async def _run_one(conn: asyncpg.Connection, migration: Migration, apply: bool) -> None:
    record = queries("migrations")["ledger_record"]
    outcome = "applied" if apply else "skipped"
    try:
        if migration.transactional:
            async with conn.transaction():
                if apply:
                    await conn.execute(migration.sql)
                await conn.execute(record, migration.filename, migration.checksum, outcome)
        else:
            if apply:
                await conn.execute(migration.sql)
            await conn.execute(record, migration.filename, migration.checksum, outcome)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{migration.filename}: {type(exc).__name__}: {exc}") from exc
