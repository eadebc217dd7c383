"""A command's life as a service: stop on signals, wait for the schema, a pool, a health port.

Every `cie` command that runs until SIGTERM is built from these; the command itself only says
what it runs.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from consumers.platform import faults, health, migrations
from consumers.platform.db import Conn, ConnectionInit, connect, create_pool, queries
from consumers.platform.periodic import stopped_within
from consumers.platform.settings import DEFAULT_METRICS_PORTS, Settings

log = structlog.get_logger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def require_schema(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Refuse to run on a schema older than this code (SchemaBehind: one line, exit 1). A
    long-running command (``stop`` given) waits for a database that does not answer yet, as
    its writers would; a one-shot command fails and its Job retries."""
    delays = settings.backoff().delays()
    while True:
        try:
            conn = await connect(settings.database_url)
            try:
                await migrations.require_current(conn)
            finally:
                await conn.close()
            return
        except Exception as exc:
            if stop is None or stop.is_set() or faults.classify(exc) != "transient":
                raise
            log.warning("schema.check_waiting", error=faults.describe(exc))
            await stopped_within(stop, next(delays))


async def open_pool(settings: Settings, init: ConnectionInit | None = None) -> asyncpg.Pool:
    """The writers' pool: CIE_DB_POOL_SIZE connections, CIE_DB_COMMAND_TIMEOUT_SECONDS each."""
    return await create_pool(settings.database_url, init, max_size=settings.db_pool_size,
                             command_timeout=settings.db_command_timeout_seconds)


def metrics_port(settings: Settings, command: str) -> int:
    """CIE_METRICS_PORT, else the command's own default (two commands side by side differ)."""
    if settings.metrics_port is not None:
        return settings.metrics_port
    return DEFAULT_METRICS_PORTS[command]


async def serve_health(
    settings: Settings, port: int, checks: health.Health
) -> health.HealthServer | None:
    """/metrics, /healthz and /readyz on ``port`` (0: not served)."""
    if not port:
        return None
    server = await health.serve(checks, settings.metrics_host, port)
    log.info("metrics.listening", host=settings.metrics_host, port=port)
    return server


async def with_health(settings: Settings, command: str, progressed_at: Callable[[], float],
                      loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a long-running loop that reads no Kafka topic (the scheduler, the notifier) with its
    metrics and health port: alive while the loop turns, ready while the database answers."""
    checks = health.Health(settings.database_url, None, progressed_at,
                           settings.liveness_timeout_seconds)
    server = await serve_health(settings, metrics_port(settings, command), checks)
    try:
        await loop()
    finally:
        if server:
            await server.close()


async def record_success(conn: Conn, command: str, started: float) -> None:
    """For the freshness alerts: the consumers export this (cie_command_last_success_...)."""
    await conn.execute(queries("health")["record_command_success"], command,
                       time.monotonic() - started)


def collect_garbage_rarely() -> None:
    """A consumer allocates millions of short-lived objects (records, events, lines) that form
    no reference cycles and are freed by reference counting; at the default threshold (700
    allocations) the cycle collector ran every few messages and rescanned the batch held in
    memory. So collections are rarer, and everything loaded at start-up is set aside for good
    (figures: bench/README.md)."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
