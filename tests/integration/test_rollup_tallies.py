"""The live model figures' kept tallies (schema/29): for the live days (today and the two
before it) a run recounts only the quarter hours its marks name, and the figures stay those of
every validated prediction, row by row. (Older days are recounted whole: test_rollup.py.)"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from consumers.analytics.rollup import rollup
from consumers.platform.db import connect
from tests.support.builders import ROLLUP_SETTINGS
from tests.support.clock import at
from tests.support.live_model import add_predictions, random_prediction, row_by_row, stored

YESTERDAY = date.today() - timedelta(days=1)


@pytest.fixture
async def db(any_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(any_db)
    yield conn
    await conn.close()


async def test_a_day_changed_in_waves_keeps_the_row_by_row_figures(
    db: asyncpg.Connection,
) -> None:
    """Five runs, each after a wave of changes all over the day: new validated predictions,
    late validations, outcomes and confidences changed. After each run the day's figures
    are those of its predictions as rows, and the kept day tallies count each validated
    prediction once."""
    rng = random.Random(29)
    day = YESTERDAY
    day_start = at(day)

    def anytime() -> datetime:
        return day_start + timedelta(seconds=rng.randrange(86_400))

    pending: list[uuid.UUID] = []
    for wave in range(5):
        rows = [random_prediction(rng, anytime(), validated=rng.random() < 0.8)
                for _ in range(400)]
        await add_predictions(db, rows)
        pending += [row[0] for row in rows if row[9] is None]  # type: ignore[misc]
        late, pending = pending[: len(pending) // 2], pending[len(pending) // 2:]
        await db.execute(
            """UPDATE model_predictions SET actual_direction = 'SHORT', actual_return = -0.01,
                   prediction_accuracy = predicted_direction = 'SHORT', start_regime = 'ranging',
                   validated_at = predicted_at + interval '16 minutes'
               WHERE prediction_id = ANY($1::uuid[])""", late)
        await db.execute(
            """UPDATE model_predictions
               SET actual_direction = CASE actual_direction WHEN 'LONG' THEN 'SHORT'
                                           ELSE 'LONG' END,
                   confidence_score = round(random()::numeric, 4)
               WHERE validated_at IS NOT NULL AND prediction_id IN (
                   SELECT prediction_id FROM model_predictions
                   WHERE validated_at IS NOT NULL ORDER BY prediction_id LIMIT 30)""")
        report = await rollup(db, ROLLUP_SETTINGS)
        assert report.live_model_days_recomputed == 1
        assert await stored(db, day) == await row_by_row(db, day, "UTC"), wave
        assert await db.fetchval(
            "SELECT sum(calls) FROM prediction_day_tallies WHERE tally = 1") == await db.fetchval(
            "SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL")
    assert await db.fetchval("SELECT count(*) FROM prediction_day_tallies WHERE calls <= 0") == 0


async def test_a_run_recounts_only_the_quarter_hours_it_was_told_of(
    db: asyncpg.Connection,
) -> None:
    """A change nobody marked (a writer that says it marks its own changes, and did not) stays
    out of the figures until a run recounts its quarter hour; `--full` recounts them all."""
    rng = random.Random(30)
    first, second = at(YESTERDAY, 14, 1), at(YESTERDAY, 14, 20)  # two quarter hours
    await add_predictions(db, [random_prediction(rng, first) for _ in range(50)]
                          + [random_prediction(rng, second) for _ in range(50)])
    await rollup(db, ROLLUP_SETTINGS)
    before = await stored(db, YESTERDAY)
    async with db.transaction():
        await db.execute("SET LOCAL cie.writer_marks_rollup = 'on'")
        await db.execute("UPDATE model_predictions SET actual_direction = predicted_direction, "
                         "prediction_accuracy = true WHERE predicted_at = $1", second)
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0
    await db.execute("UPDATE model_predictions SET confidence_score = 0.5 "
                     "WHERE prediction_id = (SELECT prediction_id FROM model_predictions "
                     "WHERE predicted_at = $1 LIMIT 1)", first)
    await rollup(db, ROLLUP_SETTINGS)
    partly = await stored(db, YESTERDAY)
    assert partly["accuracy"] == before["accuracy"]  # the second quarter hour as it was
    assert partly["auc_roc"] != before["auc_roc"]  # the first one recounted
    assert partly != await row_by_row(db, YESTERDAY, "UTC")
    await rollup(db, ROLLUP_SETTINGS, full=True)
    assert await stored(db, YESTERDAY) == await row_by_row(db, YESTERDAY, "UTC")


async def test_another_time_zone_counts_the_tallies_again_in_its_days(
    db: asyncpg.Connection,
) -> None:
    """The kept tallies' days are local days: a run in another zone (Kathmandu, UTC+5:45)
    starts them over, with nothing marked, and each of its local days gets the figures of
    its own predictions."""
    rng = random.Random(31)
    await add_predictions(db, [random_prediction(rng, at(YESTERDAY) + timedelta(minutes=7 * n))
                               for n in range(300)])  # yesterday and part of today, UTC
    await rollup(db, ROLLUP_SETTINGS)
    assert await db.fetchval("SELECT count(*) FROM rollup_pending") == 0
    zone = "Asia/Kathmandu"
    local_days = sorted(await db.fetchval(
        "SELECT array_agg(DISTINCT (predicted_at AT TIME ZONE $1)::date) FROM model_predictions",
        zone))
    assert len(local_days) == 2
    await rollup(db, dataclasses.replace(ROLLUP_SETTINGS, time_zone=zone))
    for day in local_days:
        assert await stored(db, day) == await row_by_row(db, day, zone), day
    assert await db.fetchval("SELECT time_zone FROM prediction_tallies_kept") == zone
    local_midnight = datetime.combine(local_days[1], datetime.min.time(), ZoneInfo(zone))
    assert await db.fetchval(  # a quarter hour's rows belong to the local day it is in
        "SELECT bool_and(day = $1) FROM prediction_quarter_tallies WHERE quarter >= $2",
        local_days[1], local_midnight)


async def test_days_that_leave_the_kept_ones_lose_their_tallies(
    db: asyncpg.Connection,
) -> None:
    """When the retention horizon passes a kept day (as time passes the oldest live day), its
    tallies go; the days still kept are untouched, and a day older than the kept ones that
    changes is recounted whole, never through its old tallies."""
    rng = random.Random(32)
    today = date.today()
    await add_predictions(db, [random_prediction(rng, at(YESTERDAY, 12)) for _ in range(20)]
                          + [random_prediction(rng, at(today, 0, 5)) for _ in range(20)])
    await rollup(db, ROLLUP_SETTINGS)
    assert await db.fetchval(
        "SELECT array_agg(DISTINCT day ORDER BY day) FROM prediction_day_tallies") == [
        YESTERDAY, today]
    await db.execute("UPDATE retention_rules SET keep_for = '1 day' "
                     "WHERE table_name = 'model_predictions'")  # the horizon is today
    await add_predictions(db, [random_prediction(rng, at(today, 0, 6))])  # a mark: a run
    await rollup(db, ROLLUP_SETTINGS)
    for table in ("prediction_day_tallies", "prediction_quarter_tallies"):
        assert await db.fetchval(f"SELECT array_agg(DISTINCT day) FROM {table}") == [today]
    assert await db.fetchval("SELECT kept_from FROM prediction_tallies_kept") == today
    assert await stored(db, today) == await row_by_row(db, today, "UTC")


async def test_an_evaluations_live_accuracy_sums_the_days_since_it(
    db: asyncpg.Connection,
) -> None:
    """live_accuracy is the share of right calls among the version's validated predictions
    made since the evaluation's date, old days and live ones alike, summed from the model
    days' calls the rollup keeps (schema/30); a day whose predictions retention removed
    still counts."""
    rng = random.Random(33)
    days = [date.today() - timedelta(days=n) for n in (9, 6, 1)]  # two old days, a live one
    await add_predictions(db, [random_prediction(rng, at(day, 10) + timedelta(seconds=n))
                               for day in days for n in range(200)])
    await db.execute(
        """INSERT INTO model_performance (model_version, model_type, evaluation_date, accuracy,
               testing_samples, status) VALUES ('mq', 'gbm', $1, 0.9, 500, 'production')""",
        days[1])

    async def right_share_since(day: date) -> Decimal:
        calls, right = await db.fetchrow(
            """SELECT count(*), count(*) FILTER (WHERE predicted_direction = actual_direction)
               FROM model_predictions WHERE validated_at IS NOT NULL AND predicted_at >= $1""",
            at(day))
        return (Decimal(right) / calls).quantize(Decimal("0.0001"))

    async def live_accuracy() -> Decimal:
        value = await db.fetchval("SELECT live_accuracy FROM model_performance "
                                  "WHERE source = 'offline'")
        assert isinstance(value, Decimal)
        return value

    await rollup(db, ROLLUP_SETTINGS)
    assert await live_accuracy() == await right_share_since(days[1])
    await db.execute("UPDATE model_predictions SET actual_direction = predicted_direction "
                     "WHERE predicted_at < $1", at(days[2]))  # both old days, marked
    await rollup(db, ROLLUP_SETTINGS)
    expected = await right_share_since(days[1])
    assert await live_accuracy() == expected
    assert await db.fetchval("SELECT sum(calls) FROM model_day_calls") == 600

    await db.execute("DELETE FROM model_predictions WHERE predicted_at < $1", at(days[2]))
    await add_predictions(db, [random_prediction(rng, at(days[2], 11))])  # a mark: a run
    await rollup(db, ROLLUP_SETTINGS)
    calls, right = await db.fetchrow(
        "SELECT sum(calls), sum(right_calls) FROM model_day_calls WHERE day >= $1", days[1])
    assert calls == 401  # day 6's 200 still counted, with the live day's 201
    assert await live_accuracy() == (Decimal(right) / calls).quantize(Decimal("0.0001"))
