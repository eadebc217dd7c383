"""The chaos scenario in its short form (tests/support/chaos.py; bench/chaos.py runs the full one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import Plan, run
from tests.support.stack import Stack


@pytest.mark.parametrize("path", ["plain", pytest.param("timescaledb", marks=pytest.mark.timescaledb)])
async def test_nothing_lost_or_doubled_while_everything_breaks(
    stack: Stack, tmp_path: Path, path: str
) -> None:
    if path == "timescaledb" and not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path not tested")
    report = await run(Plan(symbols=10, minutes=120, kills=2, produce_seconds=28,
                            timescaledb=path == "timescaledb"), tmp_path)
    print(report)
    assert report.kills == 2
    assert report.poison > 0 and report.dead_letters == report.poison
    assert report.problems == []
