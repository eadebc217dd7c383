"""The upgrade drill (bench/upgrade_drill.py) in a small form: a database on the old line
(PostgreSQL 15, TimescaleDB 2.28.3) filled through the real consumers, with compressed chunks,
the continuous aggregate, rollups and archive bookkeeping; pg_upgrade to PostgreSQL 18 and
TimescaleDB's update to 2.29.2; every table's rows and checksum equal afterwards; then
ingestion, the validator and the rollups work on it. The 1 GB figures are in docs/data-lifecycle.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.stack import Bucket, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from upgrade_drill import drill, missing

pytestmark = pytest.mark.timescaledb


async def test_a_database_on_the_old_line_upgrades_whole_and_keeps_working(
    stack: Stack, bucket: Bucket,
) -> None:
    if reason := missing():
        pytest.skip(f"the old line cannot be upgraded here: {reason} (the drill needs both "
                    "lines' TimescaleDB, built by hand)")
    report = await drill(size_mb=24, archive_url=bucket.url, s3=bucket.environment)
    assert report.before is not None
    tables = report.before.tables
    for table in ("market_conditions", "model_predictions", "trade_outcomes", "trade_fills",
                  "improvement_events", "strategy_performance", "archive_parts",
                  "market_daily_summary"):
        assert tables[table][0] > 0, table  # each kind of data was there to be carried over
    assert report.before.compressed_chunks > 0
    assert report.after_use["predictions validated"] > 0
