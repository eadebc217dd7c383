"""The Discord notifier against the real database (both schema paths) and a loopback server
that answers like Discord's webhook endpoint (deploy/local/webhook_sink.py): each event posted once
with the message id recorded, 429s and rate-limit headers waited out, 5xx retried with
backoff, 4xx kept until a restart, an answer that never came (or a process killed mid-post)
never posted twice, three notifier processes posting 300 events exactly once, no webhook
configured: nothing to do; and the demo's whole loop (scheduler, worker, A/B test, notifier)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs
from webhook_sink import Answer, FakeDiscord

from consumers.improvement.discord import Webhook
from consumers.improvement.notifier import Notifier, NotifierSettings
from consumers.platform.db import create_pool
from consumers.platform.faults import Backoff
from tests.support.cie import cie_environment, cie_fleet
from tests.support.harness import Ingest, eventually
from tests.support.stack import NewTopics

RULES = NotifierSettings(batch=20, lease_seconds=60, max_age_hours=24, retry_base_seconds=0.2,
              retry_max_seconds=1.0)
TOKEN = "secret-token-abc"  # in the fake's webhook path: must never be logged


@dataclass
class Outbox:
    db: asyncpg.Connection
    pool: asyncpg.Pool
    url: str  # the database's
    discord: FakeDiscord
    webhook_url: str

    def notifier(self, rules: NotifierSettings = RULES, timeout: float = 5.0) -> Notifier:
        return Notifier(self.pool, Webhook(self.webhook_url, timeout), rules,
                        Backoff(0.05, 0.5))

    async def add_event(self, event_type: str = "model_promoted", *, notified: bool = False,
                        age: str = "0 seconds", **columns: Any) -> str:
        event_id = str(uuid.uuid4())
        values = {"old_value": {"version": "v1.2"}, "new_value": {"version": "v1.3"},
                  "performance_before": {"sharpe_ratio": 1.2, "win_rate": 0.51},
                  "performance_after": {"sharpe_ratio": 1.5, "win_rate": 0.55},
                  "improvement_metrics": {"sharpe_ratio": "+25%"}, **columns}
        await self.db.execute(
            """INSERT INTO improvement_events (event_id, event_type, event_timestamp,
                   component_type, component_id, old_value, new_value, trigger_reason,
                   performance_before, performance_after, improvement_metrics,
                   discord_notified, created_at)
               VALUES ($1, $2, now(), 'model', 'direction-model', $3::jsonb, $4::jsonb,
                       'weekly retraining', $5::jsonb, $6::jsonb, $7::jsonb, $8,
                       now() - $9::text::interval)""",
            uuid.UUID(event_id), event_type, *(json.dumps(values[name]) for name in (
                "old_value", "new_value", "performance_before", "performance_after",
                "improvement_metrics")), notified, age)
        return event_id

    async def row(self, event_id: str) -> asyncpg.Record:
        row = await self.db.fetchrow("SELECT * FROM improvement_events WHERE event_id = $1",
                                     uuid.UUID(event_id))
        assert row is not None
        return row

    def posted(self) -> collections.Counter[str]:
        return collections.Counter(message.event_id for message in self.discord.messages)


@pytest.fixture
async def outbox(any_db: str) -> AsyncIterator[Outbox]:
    discord = FakeDiscord()
    webhook_url = discord.start()
    db = await asyncpg.connect(any_db)
    pool = await create_pool(any_db, None, max_size=3, command_timeout=30)
    yield Outbox(db, pool, any_db, discord, webhook_url)
    await pool.close()
    await db.close()
    discord.stop()


async def drain(outbox: Outbox, notifier: Notifier | None = None) -> collections.Counter[str]:
    notifier = notifier or outbox.notifier()
    return await asyncio.wait_for(notifier.drain(every=0.05), timeout=30)


async def test_each_event_is_posted_once_and_its_message_id_recorded(outbox: Outbox) -> None:
    first = await outbox.add_event("model_promoted")
    second = await outbox.add_event("ab_test_rollback", trigger_reason="treatment worse")
    await outbox.add_event("model_promoted", notified=True)  # notified already
    await outbox.add_event("model_promoted", age="25 hours")  # older than max_age_hours

    assert await drain(outbox) == {"posted": 2}
    assert outbox.posted() == {first: 1, second: 1}
    for message in outbox.discord.messages:
        row = await outbox.row(message.event_id)
        assert (row["discord_notified"], row["notification_message_id"]) == (
            True, message.message_id)
        assert row["notify_posting_since"] is None and row["notify_attempts"] == 1
    promoted = next(m.payload for m in outbox.discord.messages if m.event_id == first)
    embed = promoted["embeds"][0]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert embed["title"] == "model promoted: direction-model"
    assert fields["Component"] == "model direction-model"
    assert fields["Change"] == "v1.2 → v1.3"
    assert fields["sharpe_ratio"] == "1.2 → 1.5" and fields["win_rate"] == "0.51 → 0.55"
    assert fields["Improvement"] == '{"sharpe_ratio":"+25%"}'
    assert embed["footer"]["text"] == f"event {first}"
    assert promoted["allowed_mentions"] == {"parse": []}  # event text never pings anyone
    rollback = next(m.payload for m in outbox.discord.messages if m.event_id == second)
    assert rollback["embeds"][0]["color"] != embed["color"]  # red, not green

    assert await drain(outbox) == {}  # nothing left: a second run posts nothing
    assert len(outbox.discord.messages) == 2


async def test_a_429_is_waited_out_for_its_retry_after(outbox: Outbox) -> None:
    events = [await outbox.add_event() for _ in range(3)]
    outbox.discord.answer_next(Answer("429", seconds=0.6))
    outcomes = await drain(outbox)
    assert outcomes["posted"] == 3 and outcomes["retry"] == 1
    assert outbox.posted() == dict.fromkeys(events, 1)
    (limited, _), (after, _) = outbox.discord.requests[:2]
    assert after - limited >= 0.6 - 0.01  # nothing sent while Discord said wait


async def test_rate_limit_headers_pace_the_requests(outbox: Outbox) -> None:
    for _ in range(3):
        await outbox.add_event()
    outbox.discord.rate_limit_reset_after = 0.3  # every answer: bucket empty for 0.3 s
    assert await drain(outbox) == {"posted": 3}
    times = [at for at, _ in outbox.discord.requests]
    assert all(b - a >= 0.3 - 0.01 for a, b in itertools.pairwise(times)), times


async def test_5xx_is_retried_with_backoff(outbox: Outbox) -> None:
    event = await outbox.add_event()
    outbox.discord.answer_next(Answer("5xx", 500), Answer("5xx", 503))
    with capture_logs() as logs:
        outcomes = await drain(outbox)
    assert outcomes == {"retry": 2, "posted": 1}
    assert outbox.posted() == {event: 1}
    assert (await outbox.row(event))["notify_attempts"] == 3
    times = [at for at, _ in outbox.discord.requests]
    assert times[1] - times[0] >= 0.2 - 0.01 and times[2] - times[1] >= 0.4 - 0.01  # doubled
    assert [entry["error"] for entry in logs if entry["event"] == "notify.retry"] == [
        "HTTP 500", "HTTP 503"]


async def test_a_4xx_is_refused_logged_and_kept_until_a_restart(outbox: Outbox) -> None:
    refused = await outbox.add_event()
    fine = await outbox.add_event()
    outbox.discord.answer_next(Answer("4xx", 400, body={
        "message": "Invalid Form Body", "code": 50035}))
    with capture_logs() as logs:
        notifier = outbox.notifier()
        outcomes = await notifier.notify_once()
    assert outcomes == {"refused": 1, "posted": 1}  # the next event is not held up
    assert outbox.posted() == {fine: 1}
    row = await outbox.row(refused)
    assert not row["discord_notified"] and row["notify_posting_since"] is None
    assert row["notify_error"] == "HTTP 400: Invalid Form Body (code 50035)"
    [line] = [entry for entry in logs if entry["event"] == "notify.refused"]
    assert line["event_id"] == refused and line["log_level"] == "error"
    assert notifier.outbox == {"pending": 0, "refused": 1, "in_doubt": 0}
    assert await notifier.notify_once() == {}  # not retried by this process

    stop = asyncio.Event()  # a restart (after a fix) tries it again
    task = asyncio.create_task(outbox.notifier().run(0.05, stop))
    try:
        notified = await eventually(
            lambda: outbox.db.fetchval("SELECT discord_notified FROM improvement_events "
                                       "WHERE event_id = $1", uuid.UUID(refused)), True)
        assert notified is True
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert outbox.posted() == {fine: 1, refused: 1}


async def test_a_slow_answer_within_the_timeout_is_posted(outbox: Outbox) -> None:
    event = await outbox.add_event()
    outbox.discord.answer_next(Answer("slow", seconds=1.0))
    assert await drain(outbox, outbox.notifier(timeout=5)) == {"posted": 1}
    assert (await outbox.row(event))["notification_message_id"] == (
        outbox.discord.messages[0].message_id)


@pytest.mark.parametrize("lost", [Answer("slow", seconds=3.0), Answer("drop")],
                         ids=["timeout", "connection-closed"])
async def test_a_post_without_an_answer_is_in_doubt_and_never_posted_again(
    outbox: Outbox, lost: Answer,
) -> None:
    event = await outbox.add_event()
    outbox.discord.answer_next(lost)
    notifier = outbox.notifier(timeout=1)
    assert await notifier.notify_once() == {"in_doubt": 1}
    assert outbox.posted() == {event: 1}  # Discord did create it
    row = await outbox.row(event)
    assert not row["discord_notified"] and row["notify_posting_since"] is not None
    assert notifier.outbox == {"pending": 0, "refused": 0, "in_doubt": 1}
    await asyncio.sleep(lost.seconds)  # the slow answer is over; nothing changes
    assert await drain(outbox) == {}
    assert outbox.posted() == {event: 1}

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "notify", "--status",
        env=cie_environment({"DATABASE_URL": outbox.url}), stdout=asyncio.subprocess.PIPE)
    status, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert f"in doubt {event} model_promoted direction-model attempts=1" in status.decode()


async def test_a_process_killed_between_post_and_record_does_not_post_twice(
    outbox: Outbox, tmp_path: Path,
) -> None:
    event = await outbox.add_event()
    outbox.discord.answer_next(Answer("slow", seconds=30))  # created, then no answer
    environment = {"DATABASE_URL": outbox.url, "CIE_DISCORD_WEBHOOK_URL": outbox.webhook_url,
                   "CIE_NOTIFY_POLL_MS": "100", "CIE_METRICS_PORT": "0",
                   "CIE_LOG_FORMAT": "json", "CIE_NOTIFY_LEASE_SECONDS": "2"}
    log = tmp_path / "notify.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "notify", env=cie_environment(environment),
            stdout=sink, stderr=sink)
    try:
        assert await eventually(lambda: _count(outbox.discord.messages), 1) == 1, (
            log.read_text())
    finally:
        proc.kill()
        await proc.wait()
    await asyncio.sleep(2.1)  # the dead process's lease runs out
    with log.open("ab") as sink:
        again = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "notify", "--once",
            env=cie_environment(environment), stdout=sink, stderr=sink)
        assert await asyncio.wait_for(again.wait(), 30) == 0, log.read_text()
    assert outbox.posted() == {event: 1}
    assert TOKEN not in log.read_text()

    release = await asyncio.create_subprocess_exec(  # the operator saw no message: post it
        sys.executable, "-m", "consumers", "notify", "--release", event,
        env=cie_environment({"DATABASE_URL": outbox.url}), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(release.communicate(), 30)
    assert (release.returncode, out.decode()) == (0, f"released {event}: it will be posted\n")
    assert await drain(outbox) == {"posted": 1}
    assert outbox.posted() == {event: 2}
    row = await outbox.row(event)
    assert row["notification_message_id"] == outbox.discord.messages[-1].message_id


async def _count(items: list[Any]) -> int:
    return len(items)


@pytest.mark.parametrize("round_", [1, 2])
async def test_three_notifiers_post_three_hundred_events_exactly_once(
    outbox: Outbox, tmp_path: Path, round_: int,
) -> None:
    await outbox.db.execute(
        """INSERT INTO improvement_events (event_id, event_type, component_type, component_id,
               trigger_reason)
           SELECT gen_random_uuid(), 'model_promoted', 'model', 'm' || n, 'round ' || $1
           FROM generate_series(1, 300) AS n""", str(round_))
    outbox.discord.answer_next(*([Answer("ok")] * 20 + [Answer("429", seconds=0.2)]
                                 + [Answer("ok")] * 20 + [Answer("5xx", 502)]) * 3)
    environment = {"DATABASE_URL": outbox.url, "CIE_DISCORD_WEBHOOK_URL": outbox.webhook_url,
                   "CIE_NOTIFY_POLL_MS": "100", "CIE_NOTIFY_BATCH": "10",
                   "CIE_NOTIFY_RETRY_BASE_SECONDS": "0.1", "CIE_METRICS_PORT": "0",
                   "CIE_LOG_FORMAT": "json"}
    async with cie_fleet("notify", environment,
                         [tmp_path / f"notify-{n}.log" for n in range(3)]) as fleet:
        notified = await eventually(lambda: outbox.db.fetchval(
            "SELECT count(*) FROM improvement_events WHERE discord_notified"), 300, timeout=90)
        assert notified == 300, fleet.tails()
    texts = fleet.texts()
    assert fleet.exit_codes == [0, 0, 0], fleet.tails()
    assert len(outbox.discord.messages) == 300 and set(outbox.posted().values()) == {1}
    recorded = dict(await outbox.db.fetch(
        "SELECT event_id::text, notification_message_id FROM improvement_events"))
    assert recorded == {m.event_id: m.message_id for m in outbox.discord.messages}
    by_process = [text.count('"notify.posted"') for text in texts]
    assert sum(by_process) == 300 and min(by_process) > 0, by_process  # all three took part
    assert not any(TOKEN in text for text in texts)


async def test_without_a_webhook_the_notifier_says_so_and_exits_0(any_db: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "notify",
        env=cie_environment({"DATABASE_URL": any_db, "CIE_LOG_FORMAT": "json"}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    [line] = [json.loads(text) for text in out.decode().splitlines()]
    assert line["event"] == "notify.not_configured"
    assert "CIE_DISCORD_WEBHOOK_URL is not set" in line["reason"]


async def test_the_demo_runs_the_whole_loop(ingest: Ingest, tmp_path: Path,
                                            new_topic: NewTopics) -> None:
    """What `stack.sh run` shows: the demo's task is scheduled, run by the demo's worker and
    completed; its A/B test is concluded by the scheduler; the notifier posts both
    conclusions' events (and the demo's own improvement) to the webhook."""
    discord = FakeDiscord()
    webhook = discord.start()
    environment = {**ingest.environment, "CIE_TOPIC_TASKS": await new_topic("tasks"),
                   "CIE_METRICS_PORT": "0", "CIE_LOG_FORMAT": "json"}
    services = {
        "schedule": {"CIE_SCHEDULER_POLL_MS": "200", "CIE_AB_EVALUATE_SECONDS": "1",
                     "CIE_AB_MIN_TRADES": "2"},
        "notify": {"CIE_NOTIFY_POLL_MS": "200", "CIE_DISCORD_WEBHOOK_URL": webhook}}
    processes = []
    for command, extra in services.items():
        with (tmp_path / f"{command}.log").open("wb") as sink:
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consumers", command,
                env=cie_environment({**environment, **extra}), stdout=sink, stderr=sink))
    try:
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "demo", "--minutes", "60", "--loop", "60",
            env=cie_environment(environment), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(demo.communicate(), 90)
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert demo.returncode == 0, out.decode()
        done = next(line for line in lines if line["event"] == "demo.done")
        concluded = next(line for line in lines if line["event"] == "demo.ab_test_concluded")
        db = await asyncpg.connect(ingest.settings.database_url)
        try:
            task = await eventually(lambda: db.fetchrow(
                "SELECT status, run_number, last_run_at IS NOT NULL AS ran, next_run_at > now() "
                "AS later FROM optimization_queue WHERE task_id = $1",
                uuid.UUID(done["task_id"])), ("pending", 1, True, True))
            assert tuple(task) == ("pending", 1, True, True)
            test = await db.fetchrow("SELECT status, ended_at FROM ab_tests WHERE test_id = $1",
                                     uuid.UUID(done["test_id"]))
            assert test["status"] == concluded["status"] in ("promoted", "rejected")
            posted = await eventually(lambda: db.fetchval(
                "SELECT count(*) FROM improvement_events WHERE discord_notified"), 2)
            assert posted == 2
        finally:
            await db.close()
        titles = sorted(m.payload["embeds"][0]["title"] for m in discord.messages)
        assert titles == [f"ab test {concluded['status']}: momentum vs momentum-v2",
                          "params optimized: dir-v3.2"]
    finally:
        for proc in processes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), timeout=30) for proc in processes]
        discord.stop()
    assert codes == [0, 0], [(tmp_path / f"{c}.log").read_text()[-2000:] for c in services]
