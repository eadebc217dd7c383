"""The metrics port: /metrics, /healthz and /readyz, served from the process's event loop.

- /healthz (liveness): answered by the event loop itself, so a wedged loop fails the probe,
  and 503 when the consume loop has not moved (no fetch returned, no retry attempted) for
  ``stalled_after`` seconds: a member stuck in a rebalance makes no progress and is restarted.
  A process that is retrying a database outage is still alive.
- /readyz (readiness): the database answers `SELECT 1` within two seconds (on the health's own
  connection, the answer reused for a second) and the Kafka consumer has partitions
  assigned. 503 with the failing checks otherwise.
- /metrics: Prometheus text format (every metric is in consumers/platform/metrics.py), with
  what the database knows read every ten seconds: the scheduled commands' last successes,
  cold storage's progress and, on TimescaleDB, whether its policies' last runs failed.
A deliberately small HTTP/1.0 responder: three GET routes need no web framework.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.platform import metrics
from consumers.platform.db import connect, queries

READY_DB_TIMEOUT_SECONDS = 2.0
READY_CACHE_SECONDS = 1.0
# What a check or export may meet from the database: answered by cie_ready, retried next round
DATABASE_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Health:
    """The checks behind /healthz and /readyz.

    The database check has a connection of its own, never one of the writers' pool, and its
    answer is reused for ``READY_CACHE_SECONDS``: probes and scrapes, however many and from
    whomever, cost the database at most one round trip a second and never take a connection
    a flush is waiting for.
    """

    def __init__(
        self,
        database_url: str,
        consumer: AIOKafkaConsumer | None,
        progressed_at: Callable[[], float] | None = None,
        stalled_after: float = 120.0,
    ) -> None:
        self._database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._database_checked: tuple[float, bool] | None = None  # (monotonic time, answer)
        self._database_lock = asyncio.Lock()
        self._consumer = consumer
        self._progressed_at = progressed_at  # time.monotonic() of the loop's last step
        self._stalled_after = stalled_after

    def alive(self) -> bool:
        if self._progressed_at is None:
            return True
        return time.monotonic() - self._progressed_at() < self._stalled_after

    async def checks(self) -> dict[str, bool]:
        result = {"database": await self._database(), "kafka_partitions_assigned": self._kafka()}
        metrics.READY.set(1 if all(result.values()) else 0)
        return result

    async def watch(self, every: float = 10.0) -> None:
        """Keep cie_ready, and what the database knows (below), current for Prometheus
        between probes."""
        while True:
            if (await self.checks())["database"]:
                await self._export_command_successes()
                await self._export_oldest_trade()
                await self._export_timescaledb_jobs()
            await asyncio.sleep(every)

    async def _export_command_successes(self) -> None:
        """The jobs that run once and exit record their successes in the database; the
        long-running consumers, which are scraped, export them (freshness alerts)."""
        try:
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS), self._database_lock:
                assert self._conn is not None  # the check just connected
                rows = await self._conn.fetch(queries("health")["command_successes"])
        except DATABASE_UNREACHABLE:
            return  # the next round tries again; cie_ready says what is wrong
        for row in rows:
            metrics.COMMAND_LAST_SUCCESS.labels(row["command"]).set(row["at"])

    async def _export_oldest_trade(self) -> None:
        """Cold storage: the oldest trade kept against the retention (how far archiving is
        behind), and what is archived (a login that may not read them exports nothing)."""
        try:
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS), self._database_lock:
                assert self._conn is not None
                row = await self._conn.fetchrow(queries("health")["oldest_trade"])
                archived = await self._conn.fetch(queries("health")["archived"])
                buckets = await self._conn.fetch(queries("health")["archive_buckets"])
        except DATABASE_UNREACHABLE:
            return
        if row is not None and row["oldest"] is not None:
            metrics.OLDEST_ROW.labels("trade_outcomes").set(row["oldest"])
            metrics.RETENTION.labels("trade_outcomes").set(row["keep_for"])
        for table in archived:
            metrics.ARCHIVED_ROWS.labels(table["table_name"]).set(table["rows"])
            metrics.ARCHIVED_BYTES.labels(table["table_name"]).set(table["bytes"])
        for bucket in buckets:
            metrics.ARCHIVE_BUCKET_VERSIONED.labels(bucket["location"]).set(
                1 if bucket["versioned"] else 0)

    async def _export_timescaledb_jobs(self) -> None:
        """TimescaleDB runs retention, compression and the summaries' refresh as background
        jobs inside the server: a job that fails there fails silently unless exported."""
        sql = queries("health")
        try:
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS), self._database_lock:
                assert self._conn is not None
                if not await self._conn.fetchval(sql["timescaledb_jobs_visible"]):
                    return  # plain PostgreSQL: maintain does this work, and is exported above
                jobs = await self._conn.fetch(sql["timescaledb_jobs"])
        except DATABASE_UNREACHABLE:
            return
        metrics.TIMESCALEDB_JOB_FAILED.clear()  # a job removed since is not reported
        for job in jobs:
            metrics.TIMESCALEDB_JOB_FAILED.labels(job["job"], job["relation"]).set(
                1 if job["last_run_failed"] else 0)
        try:  # a login that may not read it exports nothing
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS), self._database_lock:
                assert self._conn is not None
                foreground = await self._conn.fetch(sql["maintenance_job_runs"])
        except DATABASE_UNREACHABLE:
            return
        metrics.MAINTAIN_JOB_FAILED.clear()
        for job in foreground:  # what cie maintain ran where the background could not
            metrics.MAINTAIN_JOB_FAILED.labels(job["job"], job["relation"]).set(
                1 if job["failed"] else 0)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _database(self) -> bool:
        async with self._database_lock:  # concurrent probes share one check
            checked = self._database_checked
            if checked is not None and time.monotonic() - checked[0] < READY_CACHE_SECONDS:
                return checked[1]
            answer = await self._ping()
            self._database_checked = (time.monotonic(), answer)
            return answer

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self._database_url)
                await self._conn.fetchval(queries("health")["ping"])
            return True
        except DATABASE_UNREACHABLE:
            await self.close()  # reconnect at the next check
            return False

    def _kafka(self) -> bool:
        return self._consumer is None or bool(self._consumer.assignment())


# What one client can cost. Nothing here authenticates, so nothing here may be expensive or
# held for long: a connection sends its request line (at most REQUEST_LINE_BYTES) within
# REQUEST_SECONDS and is closed CONNECTION_SECONDS after it opened, answered or not. Of the
# connections still to send their request, those idle for IDLE_SECONDS are closed, oldest
# first, whenever more than MAX_WAITING wait: clients holding idle connections cannot keep the
# kubelet's probes out (a probe sends its request at once), while a burst of fresh ones is
# served. Past MAX_CONNECTIONS waiting at once, a new connection is closed unanswered. The
# database check behind /readyz is shared and cached.
REQUEST_LINE_BYTES = 4096
REQUEST_SECONDS = 2.0
CONNECTION_SECONDS = 10.0
IDLE_SECONDS = 0.5
MAX_WAITING = 32
MAX_CONNECTIONS = 256


async def serve(health: Health, host: str, port: int) -> HealthServer:
    waiting: dict[asyncio.StreamWriter, float] = {}  # when each connected, oldest first

    def make_room() -> bool:
        """Close idle connections, oldest first, while too many wait; whether one more fits."""
        while len(waiting) >= MAX_WAITING:
            oldest, since = next(iter(waiting.items()))
            if time.monotonic() - since < IDLE_SECONDS:
                break
            waiting.pop(oldest)
            oldest.close()
        return len(waiting) < MAX_CONNECTIONS

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=REQUEST_SECONDS)
        finally:
            waiting.pop(writer, None)
        if not request or writer.is_closing():  # gone, or closed to make room
            return
        parts = request.decode("latin-1").split()
        status, content_type, body = await _respond(health, parts[1] if len(parts) >= 2 else "")
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not make_room():
            writer.close()
            return
        waiting[writer] = time.monotonic()
        try:
            async with asyncio.timeout(CONNECTION_SECONDS):
                await answer(reader, writer)
        except (TimeoutError, ConnectionError, ValueError):  # ValueError: line too long
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=REQUEST_LINE_BYTES)
    return HealthServer(server, asyncio.create_task(health.watch()), health)


@dataclass
class HealthServer:
    server: asyncio.Server
    watcher: asyncio.Task[None]
    health: Health

    async def close(self) -> None:
        self.watcher.cancel()
        self.server.close()
        await self.health.close()


async def _respond(health: Health, path: str) -> tuple[str, str, bytes]:
    route = path.split("?", 1)[0]
    if route == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
    if route == "/healthz":
        if health.alive():
            return "200 OK", "text/plain", b"ok\n"
        return "503 Service Unavailable", "text/plain", b"stalled: the consume loop has not moved\n"
    if route == "/readyz":
        checks = await health.checks()
        body: Any = {"ready": all(checks.values()), **checks}
        status = "200 OK" if body["ready"] else "503 Service Unavailable"
        return status, "application/json", json.dumps(body).encode() + b"\n"
    return "404 Not Found", "text/plain", b"not found\n"
