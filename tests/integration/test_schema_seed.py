"""The migrated database against the seed document's own DDL, on both schema paths.

Every seed column, type, precision, scale, nullability, default, key and index must be there;
anything different or extra must be listed in schema/README.md, and what it lists must be real.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from tests.support.seed_schema import (
    REPO,
    SEED_COPY,
    SEED_SHARED,
    listed_deviations,
    listed_guard_rails,
    parse_indexes,
    parse_tables,
    seed_text,
)

README = (REPO / "schema" / "README.md").read_text(encoding="utf-8")
SEED_TABLES = parse_tables(seed_text())
SEED_INDEXES = parse_indexes(seed_text())
DEVIATIONS = listed_deviations(README)


def deviation(where: str, kind: str) -> bool:
    return any(d.where == where and d.kind == kind for d in DEVIATIONS)


def seed_style_type(row: asyncpg.Record) -> str:
    """Spell a catalog column type the way the seed writes it."""
    data_type = row["data_type"]
    default = row["column_default"] or ""
    if data_type == "bigint" and default.startswith("nextval("):
        return "BIGSERIAL"
    if data_type == "character varying":
        return f"VARCHAR({row['character_maximum_length']})"
    if data_type == "numeric":
        return f"DECIMAL({row['numeric_precision']}, {row['numeric_scale']})"
    return {
        "bigint": "BIGINT", "integer": "INTEGER", "uuid": "UUID", "jsonb": "JSONB",
        "boolean": "BOOLEAN", "text": "TEXT", "date": "DATE",
        "timestamp with time zone": "TIMESTAMPTZ",
    }[data_type]


def normalise_default(value: str | None) -> str | None:
    if value is None:
        return None
    value = re.sub(r"::[a-z ]+$", "", value.strip()).lower()
    return value


def normalise_sql(text: str) -> str:
    text = re.sub(r"::(character varying|text|boolean|integer)", "", text.lower())
    text = text.replace("(", " ").replace(")", " ").replace('"', "")
    return re.sub(r"\s+", " ", text).strip()


async def columns(url: str) -> dict[tuple[str, str], asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            SELECT table_name, column_name, data_type, character_maximum_length,
                   numeric_precision, numeric_scale, is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public'
            """
        )
    finally:
        await conn.close()
    return {(r["table_name"], r["column_name"]): r for r in rows}


def test_seed_copy_is_verbatim() -> None:
    if not SEED_SHARED.exists():
        pytest.skip(f"{SEED_SHARED} is not beside this checkout; compared where it is (CI)")
    assert SEED_COPY.read_text(encoding="utf-8") == SEED_SHARED.read_text(encoding="utf-8")


def test_reader_sees_all_eight_seed_tables() -> None:
    assert sorted(SEED_TABLES) == sorted([
        "trade_outcomes", "model_predictions", "market_conditions", "strategy_performance",
        "model_performance", "improvement_events", "ab_tests", "optimization_queue",
    ])
    assert len(SEED_INDEXES) == 18


async def test_every_seed_column_has_its_type_nullability_and_default(any_db: str) -> None:
    catalog = await columns(any_db)
    problems = []
    for table in SEED_TABLES.values():
        for col in table.columns.values():
            row = catalog.get((table.name, col.name))
            if row is None:
                problems.append(f"{table.name}.{col.name}: missing")
                continue
            where = f"{table.name}.{col.name}"
            type_differs = seed_style_type(row).replace(" ", "") != col.type.replace(" ", "")
            if type_differs and not deviation(where, "type"):
                problems.append(f"{where}: type {seed_style_type(row)}, seed {col.type}")
            if (row["is_nullable"] == "NO") != col.not_null:
                problems.append(f"{where}: nullable={row['is_nullable']}, seed not_null={col.not_null}")
            if col.type != "BIGSERIAL" and normalise_default(row["column_default"]) != (
                col.default.lower() if col.default else None
            ):
                problems.append(f"{where}: default {row['column_default']}, seed {col.default}")
    assert problems == []


async def test_listed_type_deviations_are_real(any_db: str) -> None:
    catalog = await columns(any_db)
    for dev in DEVIATIONS:
        if dev.kind != "type":
            continue
        table, column = dev.where.split(".")
        seed_type = SEED_TABLES[table].columns[column].type
        assert seed_style_type(catalog[(table, column)]).replace(" ", "") != seed_type.replace(" ", "")


async def test_nothing_added_that_the_readme_does_not_list(any_db: str) -> None:
    catalog = await columns(any_db)
    extra_tables = {t for t, _ in catalog} - set(SEED_TABLES)
    assert extra_tables - {d.where for d in DEVIATIONS if d.kind == "table added"} == set()
    extra_columns = {
        f"{t}.{c}" for t, c in catalog if t in SEED_TABLES and c not in SEED_TABLES[t].columns
    }
    assert extra_columns == {d.where for d in DEVIATIONS if d.kind == "column added"}


async def _indexes(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            """
            SELECT c.relname AS table_name, i.relname AS index_name, x.indisunique,
                   x.indisprimary,
                   EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
                       AS backs_constraint, pg_get_indexdef(x.indexrelid) AS indexdef,
                   array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                         ORDER BY k.n)::text[] AS columns
            FROM pg_index x
            JOIN pg_class c ON c.oid = x.indrelid
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            """
        )
    finally:
        await conn.close()


async def test_every_seed_index_is_there_with_its_columns_order_and_predicate(any_db: str) -> None:
    by_name = {r["index_name"]: r for r in await _indexes(any_db)}
    for seed in SEED_INDEXES:
        expected = f"CREATE INDEX {seed.name} ON public.{seed.table} USING btree ({seed.columns})"
        if seed.predicate:
            expected += f" WHERE ({seed.predicate})"
        assert seed.name in by_name, seed.name
        assert normalise_sql(by_name[seed.name]["indexdef"]) == normalise_sql(expected)


async def test_seed_keys_exist_or_are_listed(any_db: str) -> None:
    indexes = await _indexes(any_db)
    unique = {(r["table_name"], tuple(r["columns"])) for r in indexes if r["indisunique"]}
    primary = {(r["table_name"], tuple(r["columns"])) for r in indexes if r["indisprimary"]}
    for table in SEED_TABLES.values():
        for key in table.unique_keys:
            listed = deviation(f"{table.name}.{key[0]}", "key") or deviation(
                f"{table.name}.({', '.join(key)})", "key")
            assert (table.name, key) in unique or listed, (table.name, key)
        for col in table.columns.values():
            if col.primary_key:
                assert (table.name, (col.name,)) in primary or deviation(
                    f"{table.name}.{col.name}", "key"), (table.name, col.name)


async def test_added_indexes_are_listed(any_db: str) -> None:
    seed_names = {i.name for i in SEED_INDEXES}
    added = {
        r["index_name"] for r in await _indexes(any_db)
        if r["table_name"] in SEED_TABLES or r["table_name"] == "trade_fills"
        if not (r["backs_constraint"] or r["index_name"] in seed_names)
    }
    assert added == {d.where for d in DEVIATIONS if d.kind == "index added"}


async def test_check_constraints_are_the_seeds_and_the_listed_guard_rails(any_db: str) -> None:
    seed_checks = set()
    for table in SEED_TABLES.values():
        text = seed_text().split(f"CREATE TABLE {table.name} (", 1)[1].split("\n);", 1)[0]
        for line in text.splitlines():
            match = re.match(r"\s*(\w+)\s.*\bCHECK\b", line)
            if match:
                seed_checks.add(f"{table.name}_{match.group(1)}_check")
    conn = await asyncpg.connect(any_db)
    try:
        catalog = {
            r["conname"] for r in await conn.fetch(
                """
                SELECT con.conname FROM pg_constraint con
                JOIN pg_class c ON c.oid = con.conrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                WHERE con.contype = 'c' AND c.relname <> 'schema_migrations'
                """
            )
        }
    finally:
        await conn.close()
    assert seed_checks <= catalog
    assert catalog - seed_checks == set(listed_guard_rails(README))
