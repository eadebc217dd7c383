"""A/B test evaluation on the real database, both schema paths: each arm's figures from its
trades since the test started, the improvement of the success metric, Welch's test on
per-trade returns checked against scipy, and the four outcomes (running, promoted, rejected,
rollback) with the improvement event a conclusion writes and publishes on improvement-events;
a test short of trades runs on until its longest duration, then is rejected as inconclusive."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from scipy import stats

from consumers.analytics.performance import RatioSettings
from consumers.contracts.improvements import Improvement
from consumers.improvement.abtest import AbTestSettings, Verdict
from consumers.improvement.abtest import evaluate as evaluate_with
from consumers.improvement.announce import Announcer
from consumers.platform.db import Conn, connect
from tests.support.builders import add_trade
from tests.support.clock import TODAY
from tests.support.stack import NewTopics, Stack
from tests.support.topic_reading import read_topic

RULES = AbTestSettings(RatioSettings(Decimal(10_000), 252, Decimal(0)), "UTC", 0.05, 30)
STAKE = Decimal(1000)  # add_trade's trades: 10 shares at 100

# Control wins half its trades, treatment three in four (and by more).
CONTROL = ["12", "-10", "9", "-11"] * 10
TREATMENT = ["15", "14", "-6", "16"] * 10


@pytest.fixture
async def db(any_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(any_db)
    yield conn
    await conn.close()


@dataclass
class Announced:
    announce: Announcer
    topic: str
    kafka: str

    async def events(self) -> list[Improvement]:
        return [msgspec.json.decode(record.value, type=Improvement)
                for record in await read_topic(self.kafka, self.topic)]


@pytest.fixture
async def announced(stack: Stack, new_topic: NewTopics) -> AsyncIterator[Announced]:
    """Conclusions published to a topic of the test's own, on the real broker."""
    topic = await new_topic("improvements")
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    yield Announced(Announcer(producer, topic), topic, stack.kafka)
    await producer.stop()


@pytest.fixture
def evaluate(announced: Announced) -> Callable[[Conn, AbTestSettings], Awaitable[list[Verdict]]]:
    async def run(conn: Conn, rules: AbTestSettings) -> list[Verdict]:
        return await evaluate_with(conn, rules, announced.announce)
    return run


Evaluate = Callable[[Conn, AbTestSettings], Awaitable[list[Verdict]]]


async def start_test(db: asyncpg.Connection, *, hours: int, metric: str = "win_rate",
                     started: datetime | None = None) -> uuid.UUID:
    test_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO ab_tests (test_id, test_name, control_version, treatment_version,
               test_type, control_traffic_percent, treatment_traffic_percent, started_at,
               scheduled_duration_hours, success_metric, minimum_improvement_percent)
           VALUES ($1, 'dir v1 vs v2', 'v1', 'v2', 'model', 50, 50, $2, $3, $4, 5.0)""",
        test_id, started or datetime.combine(TODAY - timedelta(days=8), datetime.min.time(), UTC),
        hours, metric)
    return test_id


async def add_arms(db: asyncpg.Connection, control: list[str], treatment: list[str]) -> None:
    for version, nets in (("v1", control), ("v2", treatment)):
        for n, net in enumerate(nets):
            await add_trade(db, exit_day=TODAY - timedelta(days=1 + n % 5), net=net,
                            model=version, exit_hour=10 + n % 8)


async def test_a_better_treatment_is_promoted_with_its_evidence(
    db: asyncpg.Connection, evaluate: Evaluate, announced: Announced,
) -> None:
    test_id = await start_test(db, hours=24)  # started 8 days ago: its duration is over
    await add_arms(db, CONTROL, TREATMENT)
    # trades outside the test: another model, and v2 before the test started
    await add_trade(db, exit_day=TODAY - timedelta(days=2), net="-500", model="v3")
    await add_trade(db, exit_day=TODAY - timedelta(days=30), net="-500", model="v2")
    [verdict] = await evaluate(db, RULES)
    assert verdict.status == "promoted"
    row = await db.fetchrow("SELECT * FROM ab_tests WHERE test_id = $1", test_id)
    control, treatment = json.loads(row["control_metrics"]), json.loads(row["treatment_metrics"])
    assert (control["trades"], treatment["trades"]) == (40, 40)
    assert (control["win_rate"], treatment["win_rate"]) == (0.5, 0.75)
    assert Decimal(str(control["net_pnl"])) == sum(map(Decimal, CONTROL))
    assert Decimal(str(treatment["net_pnl"])) == sum(map(Decimal, TREATMENT))
    assert row["improvement_percent"] == Decimal("50.00")  # 0.5 -> 0.75
    returns = [[float(Decimal(net) / STAKE) for net in arm] for arm in (CONTROL, TREATMENT)]
    reference = stats.ttest_ind(returns[1], returns[0], equal_var=False)
    significance = treatment["significance"]
    assert significance["p_value"] == pytest.approx(reference.pvalue, rel=1e-7)
    assert significance["t"] == pytest.approx(reference.statistic, rel=1e-9)
    assert (significance["control_n"], significance["treatment_n"]) == (40, 40)
    assert significance["ci_low"] > 0  # the whole interval favours the treatment
    assert row["status"] == "promoted" and row["ended_at"] >= row["started_at"]
    assert row["conclusion"].startswith("improved +50.00%")
    [event] = await db.fetch("SELECT * FROM improvement_events")
    assert (event["event_type"], event["component_type"], event["component_id"]) == (
        "ab_test_promoted", "model", str(test_id))
    assert json.loads(event["new_value"]) == {"version": "v2"}
    assert json.loads(event["improvement_metrics"])["improvement_percent"] == 50.0
    assert event["discord_notified"] is False
    [published] = await announced.events()  # the same event, on improvement-events
    assert (published.event_id, published.event_type, published.component_id) == (
        event["event_id"], "ab_test_promoted", str(test_id))
    assert published.performance_after == json.loads(event["performance_after"])
    # concluded: a second evaluation leaves it alone and announces nothing again
    assert await evaluate(db, RULES) == []
    assert await db.fetchval("SELECT count(*) FROM improvement_events") == 1
    assert len(await announced.events()) == 1


async def test_while_it_runs_the_metrics_are_refreshed_and_nothing_is_decided(
    db: asyncpg.Connection, evaluate: Evaluate) -> None:
    test_id = await start_test(db, hours=24 * 30)
    await add_arms(db, CONTROL, TREATMENT)
    [verdict] = await evaluate(db, RULES)
    assert (verdict.status, verdict.conclusion) == ("running", None)
    row = await db.fetchrow("SELECT * FROM ab_tests WHERE test_id = $1", test_id)
    assert (row["status"], row["ended_at"], row["improvement_percent"]) == (
        "running", None, Decimal("50.00"))
    assert json.loads(row["treatment_metrics"])["trades"] == 40
    assert await db.fetchval("SELECT count(*) FROM improvement_events") == 0


async def test_noise_is_rejected_and_harm_is_rolled_back_early(
    db: asyncpg.Connection, evaluate: Evaluate,
) -> None:
    noise = await start_test(db, hours=24)
    same = ["12", "-10", "9", "-11"] * 10
    # identical arms but for one trade: win rate differs, returns do not significantly
    await add_arms(db, same, [*same[:-1], "11"])
    [verdict] = await evaluate(db, RULES)
    assert verdict.status == "rejected" and verdict.p_value is not None
    assert verdict.p_value > 0.05
    await db.execute("DELETE FROM trade_outcomes")
    harm = await start_test(db, hours=24 * 30)  # far from over, but the treatment hurts
    await add_arms(db, TREATMENT, CONTROL)
    [verdict] = await evaluate(db, RULES)
    assert verdict.status == "rollback"
    statuses = dict(await db.fetch("SELECT test_id, status FROM ab_tests"))
    assert statuses == {noise: "rejected", harm: "rollback"}
    assert sorted(r["event_type"] for r in await db.fetch(
        "SELECT event_type FROM improvement_events")) == ["ab_test_rejected", "ab_test_rollback"]


async def test_too_few_trades_run_on_until_the_longest_duration_then_are_rejected(
    db: asyncpg.Connection, evaluate: Evaluate, announced: Announced,
) -> None:
    test_id = await start_test(db, hours=24)  # over 7 days ago; its longest (2 x) too
    await add_arms(db, CONTROL[:10], TREATMENT[:10])
    await db.execute("UPDATE ab_tests SET scheduled_duration_hours = 24 * 5")  # 10 days: not yet
    [verdict] = await evaluate(db, RULES)
    assert (verdict.status, verdict.conclusion) == ("running", None)
    row = await db.fetchrow("SELECT * FROM ab_tests WHERE test_id = $1", test_id)
    waiting = json.loads(row["treatment_metrics"])["waiting_for_trades"]
    assert waiting == {"control": 10, "treatment": 10, "needed": 30,
                       "until": (row["started_at"] + timedelta(days=10)).isoformat()}
    assert await announced.events() == []

    await db.execute("UPDATE ab_tests SET scheduled_duration_hours = 24 * 3")  # 6 days: over
    [verdict] = await evaluate(db, RULES)
    assert verdict.status == "rejected"
    assert verdict.conclusion == ("inconclusive, too few trades: 10 control, 10 treatment "
                                  "(at least 30 each)")
    assert [e.event_type for e in await announced.events()] == ["ab_test_rejected"]


async def test_two_evaluators_conclude_a_test_once(
    any_db: str, db: asyncpg.Connection, evaluate: Evaluate, announced: Announced,
) -> None:
    await start_test(db, hours=24)
    await add_arms(db, CONTROL, TREATMENT)
    other = await connect(any_db)
    try:
        first, second = await asyncio.gather(evaluate(db, RULES), evaluate(other, RULES))
    finally:
        await other.close()
    assert sorted(v.status for v in [*first, *second]) == ["promoted"]
    assert await db.fetchval("SELECT count(*) FROM improvement_events") == 1
    assert len(await announced.events()) == 1
