"""A small reader for the seed document's DDL: CREATE TABLE columns and keys, CREATE INDEX.

It reads only what the seed uses (one column per line, inline NOT NULL / PRIMARY KEY / UNIQUE /
DEFAULT, table-level UNIQUE(...)), and fails loudly on a line it does not understand, so a
change to the seed cannot silently escape the comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.support.stack import REPO

SEED_COPY = REPO / "schema" / "seed" / "analytics-database-schema.md"
SEED_SHARED = REPO.parent / "shared" / "seed" / "analytics-database-schema.md"


@dataclass(frozen=True)
class SeedColumn:
    name: str
    type: str  # as written, upper case, e.g. "DECIMAL(18, 4)"
    not_null: bool
    default: str | None
    primary_key: bool
    unique: bool


@dataclass
class SeedTable:
    name: str
    columns: dict[str, SeedColumn] = field(default_factory=dict)
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class SeedIndex:
    name: str
    table: str
    columns: str  # as written, e.g. "strategy_id, entry_time DESC"
    predicate: str | None


_TABLE = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.S)
_INDEX = re.compile(r"CREATE INDEX (\w+) ON (\w+)\s*\(([^)]*)\)\s*(?:WHERE (.*?))?;")
_COLUMN = re.compile(r"^(\w+)\s+([A-Z]+(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?)(.*)$")
_DEFAULT = re.compile(r"DEFAULT\s+('[^']*'|[\w.]+(?:\(\))?)", re.I)


def seed_text() -> str:
    return SEED_COPY.read_text(encoding="utf-8")


def sql_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```sql\n(.*?)```", text, re.S))


def parse_tables(text: str) -> dict[str, SeedTable]:
    tables = {}
    for name, body in _TABLE.findall(sql_blocks(text)):
        table = SeedTable(name)
        for raw in body.splitlines():
            line = raw.split("--", 1)[0].strip().rstrip(",").strip()
            if not line:
                continue
            unique = re.fullmatch(r"UNIQUE\s*\(([^)]*)\)", line)
            if unique:
                table.unique_keys.append(tuple(c.strip() for c in unique.group(1).split(",")))
                continue
            match = _COLUMN.match(line)
            if not match:
                raise ValueError(f"seed table {name}: cannot read line {raw!r}")
            col, typ, rest = match.groups()
            default = _DEFAULT.search(rest)
            column = SeedColumn(
                name=col,
                type=re.sub(r"\s+", " ", typ.upper()),
                not_null="NOT NULL" in rest or "PRIMARY KEY" in rest,
                default=default.group(1) if default else None,
                primary_key="PRIMARY KEY" in rest,
                unique=bool(re.search(r"\bUNIQUE\b", rest)),
            )
            table.columns[col] = column
            if column.unique:
                table.unique_keys.append((col,))
        tables[name] = table
    return tables


def parse_indexes(text: str) -> list[SeedIndex]:
    return [
        SeedIndex(name, table, columns.strip(), predicate.strip() if predicate else None)
        for name, table, columns, predicate in _INDEX.findall(sql_blocks(text))
    ]


@dataclass(frozen=True)
class Deviation:
    where: str
    kind: str


def listed_deviations(readme: str) -> list[Deviation]:
    """Rows of the deviation table in schema/README.md: `where` and kind columns."""
    section = readme.split("## Deviations from the seed", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([a-z ]+) \|", section, re.M)
    return [Deviation(where, kind.strip()) for where, kind in rows]


def listed_guard_rails(readme: str) -> list[str]:
    section = readme.split("## Guard rails", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, re.M)
