"""The suite runs the platform deploy/platform.env states, the one production deploys (the
manifest tests check production's images name the same versions)."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support.platform import platform
from tests.support.stack import Stack


async def test_the_stack_runs_the_stated_postgresql(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.server_url)
    try:
        version = await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.close()
    assert int(version) // 10000 == int(platform()["POSTGRES_MAJOR"])


@pytest.mark.timescaledb
async def test_the_stack_runs_the_stated_timescaledb(stack: Stack) -> None:
    if not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path "
                    "not tested")
    conn = await asyncpg.connect(stack.server_url)
    try:
        available = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")
    finally:
        await conn.close()
    assert available == platform()["TIMESCALEDB_VERSION"]


@pytest.mark.timescaledb
async def test_the_stack_has_a_worker_for_every_database_scheduler(stack: Stack) -> None:
    """Each database with TimescaleDB keeps a scheduler worker; at PostgreSQL's default of 8
    workers, six such databases got "failed to start job" for every run (measured). The
    stack leaves room for TimescaleDB's workers beside the parallel-query ones."""
    if not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path "
                    "not tested")
    conn = await asyncpg.connect(stack.server_url)
    try:
        workers, timescaledb, parallel = [int(await conn.fetchval(f"SHOW {name}")) for name in (
            "max_worker_processes", "timescaledb.max_background_workers",
            "max_parallel_workers")]
    finally:
        await conn.close()
    assert timescaledb >= 32 and workers >= timescaledb + parallel + 1
