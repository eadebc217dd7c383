"""The column lists of schema/queries/ingest.sql against the contracts they write.

Adding a field to a contract and forgetting one of a statement's lists (the staging table,
the insert, the select, the DO UPDATE SET, the IS DISTINCT FROM guard) would silently drop
the field, or every correction of it: each list is compared with the contract's fields."""

from __future__ import annotations

import re

import pytest

from consumers.contracts.bars import Bar
from consumers.contracts.predictions import Prediction
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.fills import FILL_COLUMNS, OUTCOME_COLUMNS
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from consumers.ingest.trades import StoredFill
from consumers.platform.db import queries

SQL = queries("ingest")


def names(text: str) -> list[str]:
    """Column names of a comma-separated list, qualifiers dropped ("EXCLUDED.x" -> "x")."""
    return [item.strip().split(".")[-1] for item in text.split(",") if item.strip()]


def between(sql: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), sql, re.S)
    assert match, (start, end)
    return match.group(1)


def stage_columns(name: str) -> list[str]:
    columns = names(between(SQL[f"{name}_stage"], "SELECT", "FROM"))
    return [c for c in columns if not c.endswith("batch_seq")]


def set_columns(upsert: str) -> list[str]:
    assignments = between(upsert + ";", "DO UPDATE SET", "WHERE" if "WHERE (" in upsert else ";")
    pairs = [a.split("=") for a in assignments.split(",") if "=" in a]
    assert all(left.strip() == right.strip().split(".")[-1] for left, right in pairs
               if "EXCLUDED" in right), "each column is set from its own EXCLUDED value"
    return [left.strip() for left, right in pairs if "EXCLUDED" in right]


@pytest.mark.parametrize(("name", "contract", "key"), [
    ("bars", Bar, BarsPipeline.key), ("predictions", Prediction, PredictionsPipeline.key)])
def test_copy_upsert_statements_list_every_field(name: str, contract: type, key: tuple[str, ...]) -> None:
    fields = list(contract.__struct_fields__)
    upsert = SQL[f"{name}_upsert"]
    assert stage_columns(name) == fields
    assert names(between(upsert, "INSERT INTO", "SELECT").split("(", 1)[1].rsplit(")", 1)[0]) \
        == fields
    assert names(between(upsert, f"DISTINCT ON ({', '.join(key)})", "FROM")) == fields


def test_a_corrected_bar_updates_every_non_key_field() -> None:
    fields = [f for f in Bar.__struct_fields__ if f not in BarsPipeline.key]
    upsert = SQL["bars_upsert"]
    assert set_columns(upsert) == fields
    guard = upsert.split("WHERE", 1)[1]
    stored, incoming = guard.split("IS DISTINCT FROM")
    assert names(stored.strip().strip("()")) == fields
    assert names(incoming.strip().rstrip(";").strip("()")) == fields


def test_fills_and_trade_rows_lists() -> None:
    from consumers.contracts.fills import Fill

    assert list(FILL_COLUMNS) == list(Fill.__struct_fields__)
    assert stage_columns("trade_outcomes") == list(OUTCOME_COLUMNS)
    upsert = SQL["trade_outcomes_upsert"]
    assert names(between(upsert, "INSERT INTO trade_outcomes (", ")")) == list(OUTCOME_COLUMNS)
    assert names(between(upsert, "SELECT", "FROM")) == list(OUTCOME_COLUMNS)
    assert set_columns(upsert) == [c for c in OUTCOME_COLUMNS if c not in ("trade_id", "entry_time")]


def test_a_stored_fill_is_read_back_in_the_order_of_its_fields() -> None:
    """fills_ledgers' rows become StoredFill positionally: the select list must be its fields,
    which are the contract's."""
    selected = names(between(SQL["fills_ledgers"], "SELECT", "FROM"))
    assert selected == list(StoredFill.__struct_fields__) == list(FILL_COLUMNS)
