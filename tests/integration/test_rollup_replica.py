"""The rollup reading from a real streaming replica: it waits until the replica has replayed
what the primary's snapshot can see, so a lagging replica never yields stale figures.

A small primary and its hot standby (pg_basebackup) are started on loopback for this module,
beside the stack's own cluster, with the same PostgreSQL binaries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest

from consumers.analytics.rollup import COPY_CHUNK_ROWS, rollup
from consumers.errors import RollupError
from consumers.platform import migrations
from consumers.platform.db import connect
from tests.support.builders import ROLLUP_SETTINGS, add_trade
from tests.support.clock import MONDAY, at
from tests.support.live_model import row_by_row, stored
from tests.support.ports import PortTaken, on_free_port_sync, taken
from tests.support.private_postgres import pg_bin


@dataclass(frozen=True)
class Pair:
    primary: str
    replica: str


def as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def run(*command: str) -> None:
    result = subprocess.run(as_postgres(*command), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def start(data: Path, port: int) -> int:
    # no TimescaleDB here: the plain path is enough to show where reads go
    log = data.parent / f"{data.name}.log"
    log.unlink(missing_ok=True)
    result = subprocess.run(as_postgres(
        str(pg_bin() / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        "-c shared_preload_libraries='' -c fsync=off -c wal_level=replica", "start"),
        capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and log.exists() and taken(log.read_text(errors="replace")):
        raise PortTaken(port)
    assert result.returncode == 0, result.stderr
    return port


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    if not (pg_bin() / "pg_basebackup").exists():
        pytest.fail(f"{pg_bin()} has no pg_basebackup: deploy/local/stack.sh up installs it")
    root = Path(tempfile.mkdtemp(prefix="cie-replica-", dir="/var/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    primary, replica = root / "primary", root / "replica"
    started: list[Path] = []
    try:
        run(str(pg_bin() / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync")
        primary_port = on_free_port_sync(lambda port: start(primary, port))
        started.append(primary)
        run(str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port),
            "-U", "postgres", "-D", str(replica), "-R", "-X", "stream", "--no-sync",
            "-c", "fast")
        replica_port = on_free_port_sync(lambda port: start(replica, port))
        started.append(replica)
        yield Pair(f"postgresql://postgres@127.0.0.1:{primary_port}/postgres",
                   f"postgresql://postgres@127.0.0.1:{replica_port}/postgres")
    finally:
        for data in reversed(started):
            subprocess.run(as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(data), "-m",
                                       "immediate", "-w", "stop"), capture_output=True,
                           timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def conns(pair: Pair) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    primary = await connect(pair.primary)
    await primary.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await primary.execute("DROP ROLE IF EXISTS cie_ingest; DROP ROLE IF EXISTS cie_analytics")
    await migrations.migrate(primary, use_timescaledb=False)
    replica = await connect(pair.replica)
    yield primary, replica
    await replica.execute("SELECT pg_wal_replay_resume()")
    await primary.close()
    await replica.close()


async def week_trades(db: asyncpg.Connection) -> int | None:
    value = await db.fetchval(
        "SELECT total_trades FROM strategy_performance WHERE period_type = 'WEEK' "
        "AND period_start = $1", MONDAY)
    return int(value) if value is not None else None


async def waiting_on_replica(replica_url: str, timeout: float = 30) -> None:
    """Until a session on the replica has asked whether it caught up (the rollup's wait loop:
    it keeps asking while replay is paused), bounded."""
    watcher = await connect(replica_url)
    try:
        deadline = time.monotonic() + timeout
        while not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND query LIKE '%pg_last_wal_replay_lsn() >=%'"):
            assert time.monotonic() < deadline, "the rollup never waited for the replica"
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()


async def test_reads_wait_for_a_lagging_replica(
    conns: tuple[asyncpg.Connection, asyncpg.Connection], pair: Pair,
) -> None:
    primary, replica = conns
    assert await replica.fetchval("SELECT pg_is_in_recovery()")
    await add_trade(primary, exit_day=MONDAY, net="10")
    await rollup(primary, ROLLUP_SETTINGS, reader=replica)
    assert await week_trades(primary) == 1

    await replica.execute("SELECT pg_wal_replay_pause()")
    await add_trade(primary, exit_day=MONDAY + timedelta(days=1), net="-5")  # the replica cannot see it
    run_ = asyncio.create_task(rollup(primary, ROLLUP_SETTINGS, reader=replica))
    await waiting_on_replica(pair.replica)
    assert not run_.done()  # waiting for the replica, not computing from its stale state
    assert await week_trades(primary) == 1
    await replica.execute("SELECT pg_wal_replay_resume()")
    report = await asyncio.wait_for(run_, timeout=30)
    assert report.strategy_periods_recomputed == 3
    assert await week_trades(primary) == 2


async def test_a_replica_too_far_behind_fails_the_run_and_keeps_the_marks(
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    primary, replica = conns
    await replica.execute("SELECT pg_wal_replay_pause()")
    await add_trade(primary, exit_day=MONDAY, net="10")
    impatient = dataclasses.replace(ROLLUP_SETTINGS, replica_wait_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(RollupError, match="has not replayed"):
        await rollup(primary, impatient, reader=replica)
    assert time.monotonic() - started < 10
    assert await primary.fetchval("SELECT count(*) FROM rollup_pending") > 0
    await replica.execute("SELECT pg_wal_replay_resume()")
    await rollup(primary, ROLLUP_SETTINGS, reader=replica)  # the next run does the work
    assert await week_trades(primary) == 1


async def test_a_busy_days_recount_comes_from_the_replica_in_chunks(
    conns: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    """A live day's quarter hours recounted on the replica are copied to the primary a chunk
    at a time, and the day's figures are those of its predictions as rows."""
    primary, replica = conns
    yesterday = date.today() - timedelta(days=1)
    await primary.execute("""
        INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
            predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
            feature_vector, actual_direction, actual_return, prediction_accuracy,
            validated_at, start_regime)
        SELECT gen_random_uuid(), 'mq', 'gbm', 'S' || n % 7,
               $1::timestamptz + n * interval '5 seconds', 15, d[1 + n % 3],
               round(random()::numeric, 4), '{}', d[1 + n * 7 % 3], 0.001,
               d[1 + n % 3] = d[1 + n * 7 % 3], now(),
               (ARRAY['trending_up', 'ranging', 'volatile', 'none'])[1 + n % 4]
        FROM generate_series(0, 17_000) AS n,
             LATERAL (SELECT ARRAY['LONG', 'SHORT', 'NEUTRAL'] AS d) AS directions""",
        at(yesterday))
    await rollup(primary, ROLLUP_SETTINGS, reader=replica)
    assert await primary.fetchval(
        "SELECT count(*) FROM prediction_quarter_tallies") > COPY_CHUNK_ROWS
    assert await stored(primary, yesterday) == await row_by_row(primary, yesterday, "UTC")
