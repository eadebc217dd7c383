"""/healthz, /readyz and /metrics of a running `cie consume`, across a PostgreSQL outage."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from consumers.contracts.bars import Bar
from tests.support.cie import run_cie
from tests.support.clock import T0
from tests.support.harness import (
    Ingest,
    consume_serving_metrics,
    eventually,
    ingest_environment,
)
from tests.support.http import get
from tests.support.private_postgres import PrivatePostgres
from tests.support.stack import Stack


async def test_ready_follows_the_database_while_alive_stays_up(
    stack: Stack, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    plain_db = await private_postgres.migrated()  # its own server: this test stops it
    environment = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(environment)
    await ingest.open()
    try:
        async with consume_serving_metrics(environment, tmp_path / "consume.log") as (proc, port):
            async def ready() -> int:
                return (await get(port, "/readyz"))[0]

            assert await eventually(ready, 200, timeout=60) == 200
            assert await get(port, "/healthz") == (200, "ok\n")
            await ingest.send([Bar(symbol="HLTH", timestamp=T0, open=Decimal(1), high=Decimal(1),
                                   low=Decimal(1), close=Decimal(1), volume=1)])
            await ingest.drained("bars", 1)
            status, metrics = await get(port, "/metrics")
            bars = ingest.topic("bars")
            assert status == 200
            # a sample of this consumer's flush, not the HELP text that is there from the start
            assert f'cie_flush_duration_seconds_count{{topic="{bars}"}} 1.0' in metrics
            assert f'cie_rows_written_total{{topic="{bars}"}} 1.0' in metrics

            await private_postgres.stop()
            try:
                assert await eventually(ready, 503, timeout=30) == 503
                status, body = await get(port, "/readyz")
                assert json.loads(body) == {
                    "ready": False, "database": False, "kafka_partitions_assigned": True}
                assert (await get(port, "/healthz"))[0] == 200
                assert proc.returncode is None
            finally:
                await private_postgres.start()
            assert await eventually(ready, 200, timeout=60) == 200
            assert proc.returncode is None
    finally:
        await ingest.close()


async def test_healthz_fails_when_the_consume_loop_stops_moving(plain_db: str) -> None:
    import time

    from consumers.platform import health

    last_step = [time.monotonic()]
    server = await health.serve(
        health.Health(plain_db, None, lambda: last_step[0], stalled_after=5), "127.0.0.1", 0)
    port = server.server.sockets[0].getsockname()[1]
    try:
        assert await get(port, "/healthz") == (200, "ok\n")
        last_step[0] -= 6  # the loop's last step is now six seconds old
        status, body = await get(port, "/healthz")
        assert status == 503 and "stalled" in body
        last_step[0] = time.monotonic()
        assert (await get(port, "/healthz"))[0] == 200
    finally:
        await server.close()


async def test_readiness_never_takes_a_writer_connection(stack: Stack, plain_db: str) -> None:
    """/readyz checks the database on a connection of its own and reuses its answer for a
    second: with every writer connection busy it still answers at once, and a burst of
    probes costs the database one query, not one each."""
    from consumers.ingest.pipelines.bars import BarsPipeline
    from consumers.ingest.pipelines.base import staging_tables
    from consumers.platform import health
    from consumers.platform.db import create_pool

    class CountingHealth(health.Health):
        pings = 0

        async def _ping(self) -> bool:
            CountingHealth.pings += 1
            return await super()._ping()

    pool = await create_pool(plain_db, staging_tables([BarsPipeline()]))
    held = [await pool.acquire() for _ in range(pool.get_max_size())]  # the writers are busy
    server = await health.serve(CountingHealth(plain_db, None), "127.0.0.1", 0)
    port = server.server.sockets[0].getsockname()[1]
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(get(port, "/readyz") for _ in range(50))), timeout=5)
        assert {status for status, _ in answers} == {200}
        assert CountingHealth.pings <= 2  # the watcher's check and the burst's one
    finally:
        await server.close()
        for conn in held:
            await pool.release(conn)
        await pool.close()


async def test_the_scheduled_commands_last_successes_are_exported(
    stack: Stack, plain_db: str
) -> None:
    """`cie rollup` and `cie maintain` exit after each run, so nothing scrapes them: each
    records its success in the database, and a long-running consumer's /metrics exports it
    (the freshness alerts read cie_command_last_success_timestamp_seconds)."""
    import asyncpg
    from prometheus_client import REGISTRY

    from consumers.platform import health

    for command in ("rollup", "maintain"):
        code, out = await run_cie(command, env={"DATABASE_URL": plain_db,
                                                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka})
        assert code == 0, out
    conn = await asyncpg.connect(plain_db)
    try:
        recorded = {r["command"]: r["at"].timestamp() for r in await conn.fetch(
            "SELECT command, last_success_at AS at FROM command_runs")}
    finally:
        await conn.close()
    assert set(recorded) == {"rollup", "maintain"}

    async def exported() -> dict[str, float | None]:
        return {command: REGISTRY.get_sample_value(
            "cie_command_last_success_timestamp_seconds", {"command": command})
            for command in recorded}

    checks = health.Health(plain_db, None)
    watcher = asyncio.create_task(checks.watch(every=0.1))
    try:
        assert await eventually(exported, recorded) == recorded
    finally:
        watcher.cancel()
        await checks.close()


async def unanswered(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection without a byte of answer (a reset when it closed
    with the client's request still unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


async def test_the_metrics_port_bounds_what_a_client_can_cost(
    plain_db: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unauthenticated: an oversized request line is dropped; a client holding more idle
    connections than the server lets wait never keeps a probe out; a client that trickles its
    request is cut off when its connection's time is up."""
    from consumers.platform import health

    server = await health.serve(health.Health(plain_db, None), "127.0.0.1", 0)
    port = server.server.sockets[0].getsockname()[1]
    idle: list[asyncio.StreamWriter] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /" + b"a" * 100_000 + b" HTTP/1.0\r\n\r\n")
        assert await unanswered(reader)
        writer.close()

        for _ in range(health.MAX_CONNECTIONS + health.MAX_WAITING):  # more than may wait
            idle.append((await asyncio.open_connection("127.0.0.1", port))[1])
        await asyncio.sleep(health.IDLE_SECONDS + 0.2)  # they have sent nothing: idle
        for _ in range(20):
            assert await get(port, "/healthz") == (200, "ok\n")  # every probe gets in

        monkeypatch.setattr(health, "CONNECTION_SECONDS", 1.0)  # shorter than REQUEST_SECONDS
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()

        async def trickle() -> None:  # a request line a byte at a time, never finished
            for byte in b"GET /healthz HTTP/1.0":
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)
        trickling = asyncio.create_task(trickle())
        assert await unanswered(reader)  # hung up on, within its time
        assert time.monotonic() - started < health.REQUEST_SECONDS
        trickling.cancel()
        writer.close()
        assert await get(port, "/healthz") == (200, "ok\n")
    finally:
        for idle_writer in idle:
            idle_writer.close()
        await server.close()
