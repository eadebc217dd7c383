"""The optimization scheduler against the real broker and database, on both schema paths:
claims in priority order, one message per run, reports recorded by the ingest consumer,
completion on the task's grid, failures backed off and capped, disabled after too many,
stuck runs reaped, stale reports ignored, a refused publish loses nothing, and three
`cie schedule` processes publishing 1,000 due tasks exactly once."""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from consumers.contracts.improvements import (
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationStarted,
)
from consumers.contracts.tasks import OptimizationTask
from consumers.improvement.announce import Announcer
from consumers.improvement.scheduler import Pass, SchedulerSettings, schedule_once
from consumers.ingest.kafka import make_producer
from consumers.platform.db import connect, queries
from tests.support.cie import cie_fleet
from tests.support.harness import Ingest, eventually
from tests.support.stack import NewTopics, Stack
from tests.support.topic_reading import read_topic

RULES = SchedulerSettings(batch=100, max_failures=5, retry_base_seconds=60, run_timeout_seconds=3600)


@dataclass
class Scheduling:
    db: asyncpg.Connection
    producer: AIOKafkaProducer
    topic: str
    kafka: str
    announce: Announcer  # to the ingest consumer's improvement-events topic

    async def run(self, rules: SchedulerSettings = RULES) -> Pass:
        return await schedule_once(self.db, self.producer, self.topic, rules, self.announce)

    async def add_task(self, *, priority: int = 5, due_in: timedelta = timedelta(minutes=-1),
                       frequency: str = "daily", enabled: bool = True, config: Any = None,
                       status: str = "pending") -> uuid.UUID:
        task_id = uuid.uuid4()
        await self.db.execute(
            """INSERT INTO optimization_queue (task_id, task_type, component_id, frequency,
                   next_run_at, priority, config, enabled, status)
               VALUES ($1, 'hyperparameter', 'dir-v1', $2, now() + $3, $4, $5::jsonb, $6, $7)""",
            task_id, frequency, due_in, priority, json.dumps(config or {"trials": 10}), enabled,
            status)
        return task_id

    async def task(self, task_id: uuid.UUID) -> asyncpg.Record:
        row = await self.db.fetchrow("SELECT * FROM optimization_queue WHERE task_id = $1",
                                     task_id)
        assert row is not None
        return row

    async def published(self) -> list[OptimizationTask]:
        return [msgspec.json.decode(record.value, type=OptimizationTask)
                for record in await read_topic(self.kafka, self.topic)]


@pytest.fixture
async def scheduling(stack: Stack, ingest: Ingest,
                     new_topic: NewTopics) -> AsyncIterator[Scheduling]:
    """A scheduler's connection and producer on the database the ingest consumer writes."""
    topic = await new_topic("tasks")
    db = await connect(ingest.settings.database_url)
    producer = make_producer(ingest.settings)
    await producer.start()
    yield Scheduling(db, producer, topic, stack.kafka,
                     Announcer(producer, ingest.topic("improvements")))
    await producer.stop()
    await db.close()


async def test_due_tasks_are_claimed_by_priority_then_lateness(scheduling: Scheduling) -> None:
    s = scheduling
    late = await s.add_task(priority=1, due_in=timedelta(minutes=-10))
    urgent = await s.add_task(priority=1, due_in=timedelta(minutes=-1))
    routine = await s.add_task(priority=5, due_in=timedelta(hours=-1))
    await s.add_task(priority=1, due_in=timedelta(hours=1))  # not due
    await s.add_task(priority=1, enabled=False)  # disabled
    await s.add_task(priority=1, status="running")  # running already
    claim = s.db.transaction()  # the claim statement alone, rolled back: the tasks stay due
    await claim.start()
    first_two = await s.db.fetch(queries("scheduler")["claim_due"], 2)
    rest = await s.db.fetch(queries("scheduler")["claim_due"], 10)
    await claim.rollback()
    assert [{r["task_id"] for r in first_two}, {r["task_id"] for r in rest}] == [
        {late, urgent}, {routine}]

    assert await s.run() == Pass(reaped=0, retried=0, disabled=0, published=3)
    published = {task.task_id: task for task in await s.published()}
    assert set(published) == {late, urgent, routine}
    for task_id, task in published.items():
        row = await s.task(task_id)
        assert (row["status"], row["run_number"], task.run_number) == ("running", 1, 1)
        assert task.scheduled_for == row["next_run_at"]
        assert (task.priority, task.frequency, task.config) == (
            row["priority"], row["frequency"], json.loads(row["config"]))
    # a second pass finds nothing due: each run is published once
    assert await s.run() == Pass(0, 0, 0, 0)
    assert len(await s.published()) == 3


async def test_a_refused_publish_claims_nothing_and_the_next_pass_sends_the_same_run(
    scheduling: Scheduling,
) -> None:
    s = scheduling
    task_id = await s.add_task(config={"grid": "x" * 4000})
    tiny = AIOKafkaProducer(bootstrap_servers=s.kafka, max_request_size=1024)
    await tiny.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await schedule_once(s.db, tiny, s.topic, RULES, s.announce)
    finally:
        await tiny.stop()
    row = await s.task(task_id)
    assert (row["status"], row["run_number"], row["claimed_at"]) == ("pending", 0, None)
    assert await s.run() == Pass(0, 0, 0, 1)
    [task] = await s.published()
    assert (task.task_id, task.run_number) == (task_id, 1)


async def test_completion_moves_the_task_to_the_next_slot_of_its_grid(
    scheduling: Scheduling, ingest: Ingest,
) -> None:
    """From the scheduled time, not from now: no drift, and the three periods missed while
    the run was late are skipped, not run one after another."""
    s = scheduling
    task_id = await s.add_task(frequency="daily", due_in=-timedelta(days=3, hours=2))
    scheduled = (await s.task(task_id))["next_run_at"]
    await s.run()
    completed_at = scheduled + timedelta(days=3, hours=2, minutes=5)
    await ingest.send([
        OptimizationStarted(event_id=uuid.uuid4(), task_id=task_id, run_number=1,
                            started_at=completed_at - timedelta(minutes=4)),
        OptimizationCompleted(event_id=uuid.uuid4(), task_id=task_id, run_number=1,
                              completed_at=completed_at, result={"best": 0.61}),
    ])
    await ingest.drained("improvements", 2)
    row = await s.task(task_id)
    assert row["status"] == "pending"
    assert row["next_run_at"] == scheduled + timedelta(days=4)
    assert (row["last_run_at"], json.loads(row["last_result"])) == (completed_at, {"best": 0.61})
    assert (row["consecutive_failures"], row["last_error"], row["claimed_at"]) == (0, None, None)
    # a start that arrives after the completion, and the completion again under a new event
    # id, change nothing
    await ingest.send([
        OptimizationStarted(event_id=uuid.uuid4(), task_id=task_id, run_number=1,
                            started_at=completed_at),
        OptimizationCompleted(event_id=uuid.uuid4(), task_id=task_id, run_number=1,
                              completed_at=completed_at + timedelta(hours=30), result={}),
    ])
    await ingest.drained("improvements", 4)
    assert await s.task(task_id) == row
    assert await ingest.all_dead_letters("improvements") == []


async def test_failures_back_off_exponentially_up_to_the_period_then_disable_the_task(
    scheduling: Scheduling, ingest: Ingest,
) -> None:
    s = scheduling
    rules = SchedulerSettings(batch=100, max_failures=4, retry_base_seconds=1000, run_timeout_seconds=3600)
    task_id = await s.add_task(frequency="hourly", due_in=-timedelta(hours=6))
    now = datetime.now(UTC)
    failed_at = [now - timedelta(hours=h) for h in (5, 4, 3, 2)]
    # hourly: retries after 1000 s, 2000 s, then 4000 s capped at the period (3600 s)
    expected_retry = [failed_at[0] + timedelta(seconds=1000),
                      failed_at[1] + timedelta(seconds=2000),
                      failed_at[2] + timedelta(seconds=3600)]
    assert await s.run(rules) == Pass(0, 0, 0, 1)
    sent = 0
    for run, when in enumerate(failed_at, start=1):
        await ingest.send([OptimizationFailed(event_id=uuid.uuid4(), task_id=task_id,
                                              run_number=run, failed_at=when,
                                              error=f"diverged ({run})")])
        sent += 1
        if run == 2:  # a report about the previous run, late: changes nothing
            await ingest.send([OptimizationFailed(event_id=uuid.uuid4(), task_id=task_id,
                                                  run_number=1, failed_at=when, error="late")])
            sent += 1
        await ingest.drained("improvements", sent)
        row = await s.task(task_id)
        assert (row["status"], row["consecutive_failures"]) == ("failed", run)
        assert row["last_error"] == f"diverged ({run})"
        done = await s.run(rules)
        row = await s.task(task_id)
        if run < rules.max_failures:  # retried: due already (the failures are hours old)
            assert done == Pass(reaped=0, retried=1, disabled=0, published=1)
            assert row["next_run_at"] == expected_retry[run - 1]
            assert (row["status"], row["run_number"]) == ("running", run + 1)
        else:
            assert done == Pass(reaped=0, retried=0, disabled=1, published=0)
            assert (row["status"], row["enabled"], row["run_number"]) == ("failed", False, run)
    [event] = await s.db.fetch(
        "SELECT * FROM improvement_events WHERE event_type = 'optimization_disabled'")
    assert (event["component_type"], event["component_id"]) == ("optimization_task", "dir-v1")
    assert json.loads(event["new_value"]) == {
        "enabled": False, "task_id": str(task_id), "consecutive_failures": 4,
        "last_error": "diverged (4)"}
    assert event["discord_notified"] is False  # for the notifier
    # published on improvement-events too: the ingest consumer reads it, and finds it recorded
    await ingest.drained("improvements", sent + 1)
    assert await s.db.fetchval("SELECT count(*) FROM improvement_events") == 1
    assert [t.run_number for t in await s.published()] == [1, 2, 3, 4]
    # disabled: never claimed again, never settled again
    await s.db.execute("UPDATE optimization_queue SET next_run_at = now() - interval '1 day'")
    assert await s.run(rules) == Pass(0, 0, 0, 0)
    assert await ingest.all_dead_letters("improvements") == []


async def test_a_run_with_no_report_is_reaped_as_a_failure(
    scheduling: Scheduling, ingest: Ingest,
) -> None:
    s = scheduling
    rules = SchedulerSettings(batch=100, max_failures=5, retry_base_seconds=60, run_timeout_seconds=1)
    task_id = await s.add_task()
    assert await s.run(rules) == Pass(0, 0, 0, 1)
    claimed_at = (await s.task(task_id))["claimed_at"]
    assert claimed_at is not None
    stuck = await eventually(lambda: s.db.fetchval(
        "SELECT now() - claimed_at > interval '1 second' FROM optimization_queue "
        "WHERE task_id = $1", task_id), True, timeout=10)
    assert stuck is True
    assert await s.run(rules) == Pass(reaped=1, retried=1, disabled=0, published=0)
    row = await s.task(task_id)
    assert (row["status"], row["consecutive_failures"]) == ("pending", 1)
    assert row["last_error"] == "run 1: no report within 1 seconds"
    assert row["next_run_at"] == row["last_failed_at"] + timedelta(seconds=60)
    # the worker's completion, too late: the run was given up, nothing changes
    await ingest.send([OptimizationCompleted(event_id=uuid.uuid4(), task_id=task_id,
                                             run_number=1, completed_at=datetime.now(UTC))])
    await ingest.drained("improvements", 1)
    assert await s.task(task_id) == row


async def test_a_report_about_an_unknown_task_is_a_dead_letter(ingest: Ingest) -> None:
    orphan = OptimizationCompleted(event_id=uuid.uuid4(), task_id=uuid.uuid4(), run_number=1,
                                   completed_at=datetime.now(UTC))
    await ingest.send([orphan])
    await ingest.drained("improvements", 1)
    [letter] = await ingest.all_dead_letters("improvements")
    assert dict(letter.headers)["dlq.error.class"] == b"UnknownSubject"


async def test_three_schedulers_publish_a_thousand_due_tasks_exactly_once(
    scheduling: Scheduling, ingest: Ingest, tmp_path: Path,
) -> None:
    s = scheduling
    await s.db.execute(
        """INSERT INTO optimization_queue (task_id, task_type, component_id, frequency,
               next_run_at, priority, config)
           SELECT gen_random_uuid(), 'hyperparameter', 'm' || n, 'daily',
                  now() - n * interval '1 second', 1 + n % 5, '{}'::jsonb
           FROM generate_series(1, 1000) AS n""")
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka, "DATABASE_URL": ingest.settings.database_url,
        "CIE_TOPIC_TASKS": s.topic, "CIE_SCHEDULER_BATCH": "25", "CIE_SCHEDULER_POLL_MS": "100",
        "CIE_METRICS_PORT": "0", "CIE_LOG_FORMAT": "json"}
    async with cie_fleet("schedule", environment,
                         [tmp_path / f"schedule-{n}.log" for n in range(3)]) as fleet:
        running = await eventually(lambda: s.db.fetchval(
            "SELECT count(*) FROM optimization_queue WHERE status = 'running'"), 1000,
            timeout=90)
        assert running == 1000, fleet.tails()
    assert fleet.exit_codes == [0, 0, 0], fleet.tails()
    published = await s.published()
    runs = collections.Counter((task.task_id, task.run_number) for task in published)
    assert len(published) == 1000 and set(runs.values()) == {1}
    assert {run for _, run in runs} == {1}
    by_process = [text.count('"scheduler.published"') for text in fleet.texts()]
    assert sum(by_process) == 1000
