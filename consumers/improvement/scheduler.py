"""`cie schedule`: the optimization scheduler. Every pass, in this order:

1. reap: runs claimed longer ago than the run timeout with no report count as failed;
2. settle failures: a failed task is retried after an exponential backoff (capped at its
   period), or disabled after ``max_failures`` in a row, with an improvement event saying so
   (recorded, and published on improvement-events before the decision commits);
3. claim and publish: due tasks (priority first) become running, one message per run goes to
   optimization-tasks, keyed by task id.

Step 3 is one database transaction around the publish: the claim commits only after the broker
acknowledged every message, so a crash or a refused publish leaves the tasks pending with the
same run number, and the next pass publishes the same (task_id, run_number) again. Nothing is
lost; a run may be delivered twice only in that case, and its (task_id, run_number) says so.
Schedulers running side by side claim with SKIP LOCKED, so each run is published by one of
them. Reports come back on improvement-events and are recorded by `cie consume`
(consumers/ingest/pipelines/improvements.py); PostgreSQL holds all the state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from consumers.contracts.tasks import OptimizationTask
from consumers.errors import FatalError
from consumers.improvement import abtest
from consumers.improvement.announce import Announcer
from consumers.platform import metrics, periodic
from consumers.platform.db import Conn, queries
from consumers.platform.faults import classify, describe
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SchedulerSettings:
    batch: int  # tasks claimed (and published) per transaction
    max_failures: int  # consecutive failures that disable a task
    retry_base_seconds: int  # first retry's delay, doubled per further failure
    run_timeout_seconds: int  # a run with no report for this long counts as failed

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulerSettings:
        return cls(settings.scheduler_batch, settings.scheduler_max_failures,
                   settings.scheduler_retry_base_seconds, settings.scheduler_run_timeout_seconds)


@dataclass(frozen=True)
class Pass:
    """What one pass did."""

    reaped: int
    retried: int
    disabled: int
    published: int


async def schedule_once(conn: Conn, producer: AIOKafkaProducer, topic: str,
                        rules: SchedulerSettings, announce: Announcer) -> Pass:
    sql = queries("scheduler")
    reaped = await conn.fetch(sql["reap_stuck"], rules.run_timeout_seconds)
    for row in reaped:
        log.warning("scheduler.run_timed_out", task_id=str(row["task_id"]),
                    run_number=row["run_number"])
    async with conn.transaction():  # a task is disabled only once its event is published
        settled = await conn.fetchrow(sql["settle_failed"], rules.max_failures,
                                      rules.retry_base_seconds)
        assert settled is not None  # an aggregate: always one row
        await announce(conn, settled["announced"])
    published = 0
    while True:  # a full batch: more may be due
        claimed = await _claim_and_publish(conn, producer, topic, rules.batch)
        published += claimed
        if claimed < rules.batch:
            break
    done = Pass(len(reaped), settled["retried"], settled["disabled"], published)
    for event, count in (("reaped", done.reaped), ("retried", done.retried),
                         ("disabled", done.disabled), ("published", done.published)):
        metrics.SCHEDULER_TASKS.labels(event).inc(count)
    await _export_queue(conn)
    return done


async def _claim_and_publish(conn: Conn, producer: AIOKafkaProducer, topic: str,
                             batch: int) -> int:
    async with conn.transaction():
        rows = await conn.fetch(queries("scheduler")["claim_due"], batch)
        tasks = sorted((_task(row) for row in rows),
                       key=lambda task: (task.priority, task.scheduled_for))
        sent = [await producer.send(topic, _encode(task), key=str(task.task_id).encode())
                for task in tasks]
        await asyncio.gather(*sent)  # every message acknowledged before the claim commits
    for task in tasks:
        log.info("scheduler.published", task_id=str(task.task_id), run_number=task.run_number,
                 task_type=task.task_type, component_id=task.component_id,
                 scheduled_for=task.scheduled_for.isoformat())
    return len(tasks)


def _task(row: asyncpg.Record) -> OptimizationTask:
    return OptimizationTask(
        task_id=row["task_id"], run_number=row["run_number"], task_type=row["task_type"],
        component_id=row["component_id"], frequency=row["frequency"],
        priority=row["priority"], scheduled_for=row["scheduled_for"],
        config=msgspec.json.decode(row["config"]))


async def _export_queue(conn: Conn) -> None:
    row = await conn.fetchrow(queries("scheduler")["queue_depth"])
    assert row is not None
    for state in ("due", "running", "disabled"):
        metrics.SCHEDULER_QUEUE.labels(state).set(row[state])


class Scheduler:
    """The pass, every ``every`` seconds until ``stop``, and the A/B evaluation every
    ``ab_every`` seconds (0: never); a failed step is logged and tried again the next time,
    unless the failure is fatal (a missing table or privilege)."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str,
                 rules: SchedulerSettings, announce: Announcer, ab_rules: abtest.AbTestSettings,
                 ab_every: float) -> None:
        self._pool, self._producer, self._topic, self._rules = pool, producer, topic, rules
        self._announce, self._ab_rules, self._ab_every = announce, ab_rules, ab_every
        self.progressed_at = time.monotonic()  # /healthz: the loop still turns

    async def run(self, every: float, stop: asyncio.Event) -> None:
        evaluated_at: float | None = None

        async def step() -> None:
            nonlocal evaluated_at
            await self._step("scheduler", self._pass)
            if self._ab_every and (evaluated_at is None
                                   or time.monotonic() - evaluated_at >= self._ab_every):
                evaluated_at = time.monotonic()
                await self._step("abtest", self._evaluate)
            self.progressed_at = time.monotonic()
            metrics.SCHEDULER_LAST_PASS.set(time.time())

        await periodic.every(every, step, stop, name="scheduler")

    async def _pass(self, conn: Conn) -> None:
        done = await schedule_once(conn, self._producer, self._topic, self._rules,
                                   self._announce)
        if done != Pass(0, 0, 0, 0):
            log.info("scheduler.pass", reaped=done.reaped, retried=done.retried,
                     disabled=done.disabled, published=done.published)

    async def _evaluate(self, conn: Conn) -> None:
        await abtest.evaluate(conn, self._ab_rules, self._announce)

    async def _step(self, name: str, step: Callable[[Conn], Awaitable[None]]) -> None:
        try:
            async with self._pool.acquire() as conn:
                await step(conn)
        except Exception as exc:
            if classify(exc) == "fatal":
                raise FatalError(f"{name}: {describe(exc)}") from exc
            log.warning(f"{name}.failed", error=describe(exc))
