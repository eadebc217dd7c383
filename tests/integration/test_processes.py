"""``cie consume --processes N``: N group members in one pod, stopped and failed as one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from consumers.contracts.bars import Bar
from tests.support.harness import (
    Ingest,
    consume_subprocess,
    counter,
    eventually,
    ingest_environment,
)
from tests.support.stack import Stack

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)


def bars(count: int) -> list[Bar]:
    return [Bar(symbol=f"P{i % 30:02d}", timestamp=T0 + timedelta(minutes=i // 30),
                open=Decimal("10"), high=Decimal("11"), low=Decimal("9"),
                close=Decimal("10.25"), volume=i) for i in range(count)]


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the log the processes share, each a whole JSON object (json.loads
    raises if two processes spliced their lines)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def two_members_hold(log: Path, topic: str, timeout: float = 60) -> None:
    """Wait until the last two assignments split ``topic``'s partitions between two members."""
    deadline = time.monotonic() + timeout
    while True:
        held = [frozenset(p for p in e["partitions"] if p.startswith(f"{topic}["))
                for e in json_lines(log) if e["event"] == "partitions.assigned"]
        if len(held) >= 2 and all(held[-2:]) and not held[-1] & held[-2]:
            return
        assert time.monotonic() < deadline, f"assignments so far: {held}"
        await asyncio.sleep(0.2)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


async def test_two_processes_share_the_partitions_and_stop_as_one(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    env = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(env)
    await ingest.open()
    log = tmp_path / "consume.log"
    try:
        async with consume_subprocess(env, log, "--processes", "2") as proc:
            await two_members_hold(log, ingest.topic("bars"))
            assert len(children(proc.pid)) == 2
            await ingest.send(bars(3000))
            rows = counter(plain_db, "SELECT count(*) FROM market_conditions")
            assert await eventually(rows, 3000, timeout=60) == 3000
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
        events = json_lines(log)
        assert sum(1 for e in events if e["event"] == "consume.drained") == 2
        flushed = [e for e in events if e["event"] == "batch.flushed"
                   and e["topic"] == ingest.topic("bars")]
        assert sum(e["rows"] for e in flushed) == 3000
    finally:
        await ingest.close()


async def test_a_child_that_dies_takes_the_pod_down_with_it(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    """Kubernetes restarts a pod whose process exits; a pod that lost one of its members and
    kept running would hold its share of the partitions' progress at a standstill only until
    the session timeout, but would run at half its capacity for good."""
    env = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(env)
    await ingest.open()
    log = tmp_path / "consume.log"
    try:
        async with consume_subprocess(env, log, "--processes", "2") as proc:
            await two_members_hold(log, ingest.topic("bars"))
            victim, survivor = children(proc.pid)
            os.kill(victim, signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), timeout=60) == 128 + signal.SIGKILL
            assert not Path(f"/proc/{survivor}").exists()  # noqa: ASYNC240 - procfs
        assert any(e["event"] == "processes.child_ended" for e in json_lines(log))
        assert sum(1 for e in json_lines(log) if e["event"] == "consume.drained") == 1
    finally:
        await ingest.close()


async def test_a_stop_past_the_drain_deadline_counts_what_it_leaves_and_loses_nothing(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    """The table is locked, so the flush in flight waits; SIGTERM's drain gives up at its
    deadline, exits non-zero and names every message it read and did not write (the one in
    flight included: it once said "0 buffered"). The next process writes them all once."""
    env = ingest_environment(stack.kafka, plain_db, CIE_DRAIN_DEADLINE_SECONDS="2")
    ingest = Ingest(env)
    await ingest.open()
    locker = await asyncpg.connect(plain_db)
    log = tmp_path / "consume.log"
    try:
        async with consume_subprocess(env, log) as proc:
            await assigned(log, ingest.topic("bars"))
            locked = locker.transaction()
            await locked.start()
            await locker.execute("LOCK TABLE market_conditions IN ACCESS EXCLUSIVE MODE")
            await ingest.send(bars(1200))
            waiting = counter(plain_db, "SELECT count(*) > 0 FROM pg_stat_activity WHERE "
                              "wait_event_type = 'Lock' AND datname = current_database()")
            assert await eventually(waiting, True, timeout=30)
            await asyncio.sleep(1)  # the rest is fetched and buffered meanwhile
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 1
            await locked.rollback()
        failed = [e for e in json_lines(log) if e["event"] == "command.failed"]
        assert len(failed) == 1 and failed[0]["error"].startswith(
            "1200 messages read but not written and committed within 2s"), failed
        async with consume_subprocess(env, tmp_path / "again.log"):
            rows = counter(plain_db, "SELECT count(*) FROM market_conditions")
            assert await eventually(rows, 1200, timeout=60) == 1200
            await ingest.drained("bars", 1200)
    finally:
        await locker.close()
        await ingest.close()


async def assigned(log: Path, topic: str, timeout: float = 60) -> None:
    """Wait until the process holds partitions of ``topic``."""
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "partitions.assigned"
                  and any(p.startswith(f"{topic}[") for p in e["partitions"])
                  for e in json_lines(log)):
        assert time.monotonic() < deadline, f"no partition of {topic} assigned"
        await asyncio.sleep(0.2)
