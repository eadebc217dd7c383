"""One consumer-group member as a service: the consume loop with its pool, health port and lag.

`cie consume` runs it with the ingest pipelines and a dead-letter producer; `cie validate` with
the validator's pipelines, no dead letters and its sweep ``beside`` it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from consumers.ingest.kafka import DeadLetters, make_consumer
from consumers.ingest.lag import LagMonitor
from consumers.ingest.pipelines.base import Pipeline, staging_tables
from consumers.ingest.runner import Runner
from consumers.platform import health
from consumers.platform.service import collect_garbage_rarely, open_pool, serve_health
from consumers.platform.settings import Settings

# A task that runs beside the consume loop on its pool until ``stop`` (the validator's sweep).
Beside = Callable[[asyncpg.Pool, asyncio.Event], Coroutine[Any, Any, None]]


async def consume_until_stopped(
    settings: Settings,
    pipelines: dict[str, Pipeline],
    dead_letters: DeadLetters | None,
    stop: asyncio.Event,
    *,
    metrics_port: int,
    beside: Beside | None = None,
) -> None:
    """Run the consume loop until ``stop`` (SIGTERM/SIGINT), with the health port, the lag
    monitor and the ``beside`` task; then drain and close everything in order."""
    collect_garbage_rarely()
    pool = await open_pool(settings, staging_tables(list(pipelines.values())))
    consumer = make_consumer(settings)
    runner = Runner(settings, consumer, pool, dead_letters, pipelines)
    checks = health.Health(settings.database_url, consumer, lambda: runner.progressed_at,
                           settings.liveness_timeout_seconds)
    server = await serve_health(settings, metrics_port, checks)
    await consumer.start()
    task = asyncio.create_task(beside(pool, stop)) if beside else None
    lag = LagMonitor(settings, settings.consumer_group, consumer.assignment,
                     settings.lag_refresh_seconds)
    lag_task = asyncio.create_task(lag.run(stop))
    try:
        await runner.run(stop)
    finally:
        stop.set()
        if task:
            await task
        await lag_task
        await consumer.stop()
        if server:
            await server.close()
        await pool.close()
