"""The most memory a hostile producer can make `cie consume` use stays under its pod's limit.

JSON of small elements decodes to many times its size in Python objects (1 MiB of ``0.1,``
becomes ~28 MiB of ``Decimal``s). Before the free-form limits (contracts/free_form.py) and the
batches' byte limits, one batch of such feature vectors held gigabytes: the pod was killed for
memory, restarted onto the same uncommitted offsets and killed again, a crash loop.

A real `cie consume` process with the production settings reads predictions and improvement
events built for the worst case: values of the largest size that is decoded at all, free-form
fields just inside every limit (accepted, stored) and just past them (dead letters). Its peak
resident memory (VmHWM) is compared with the ingest Deployment's memory limit, read from the
manifest.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from consumers.ingest.kafka import DLQ_ERROR_CLASS
from consumers.platform.settings import Settings
from tests.support.cie import cie_environment
from tests.support.clock import T0
from tests.support.harness import Ingest, consume_subprocess, ingest_environment
from tests.support.stack import Stack

MANIFEST = Path(__file__).resolve().parents[2] / "deploy/k8s/base/ingest-deployment.yaml"
DEFAULTS = Settings()
MIB = 1024 * 1024


def pod_memory_limit() -> int:
    """The ingest container's memory limit, in bytes."""
    limit = re.search(r"limits: \{[^}]*memory: (\d+)Mi\}", MANIFEST.read_text())
    assert limit, f"no memory limit in {MANIFEST}"
    return int(limit.group(1)) * MIB


def peak_resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert peak, status
    return int(peak.group(1)) * 1024


class Numbers:
    """Varied numbers of a few significant digits (JSON numbers: Decimals once decoded), cut
    from one shuffled pool at random places so that making them does not dominate the test."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pools = {digits: [rng.randint(10 ** (digits - 1), 10 ** digits - 1)
                               / 10 ** (digits - 1) for _ in range(250_000)]
                      for digits in (2, 3, 4)}

    def __call__(self, count: int, digits: int) -> list[float]:
        pool = self.pools[digits]
        start = self.rng.randrange(len(pool) - count)
        return pool[start:start + count]


def prediction(i: int, feature_vector: Any) -> bytes:
    return json.dumps({
        "prediction_id": str(uuid.UUID(int=i + 1)), "model_version": "v1",
        "model_type": "lstm", "symbol": "AAPL",
        "predicted_at": (T0 + timedelta(seconds=i)).isoformat(),
        "prediction_horizon_minutes": 15, "predicted_direction": "LONG",
        "confidence_score": "0.75", "feature_vector": feature_vector}).encode()


def improvement(i: int, **payloads: Any) -> bytes:
    return json.dumps({
        "type": "improvement", "event_id": str(uuid.UUID(int=i + 1)), "event_type": "retrain",
        "component_type": "model", "component_id": "m1", **payloads}).encode()


def nested(depth: int) -> Any:
    value: Any = [1.5]
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@functools.cache
def hostile_predictions() -> tuple[list[bytes], int]:
    """The messages, and how many of them are within every limit."""
    numbers = Numbers(random.Random(42))
    largest: list[bytes] = []  # as large as is decoded at all, past the field limit
    while len(largest) < 24:
        vector = {"v": numbers(200_000, 2)}
        value = prediction(len(largest), vector)
        while len(value) > DEFAULTS.max_value_bytes:
            vector["v"] = vector["v"][:-1000]
            value = prediction(len(largest), vector)
        largest.append(value)
    elements = DEFAULTS.free_form_max_elements
    vectors = [{"v": numbers(elements - 1, 3)} for _ in range(500)]
    assert max(len(json.dumps(v)) for v in vectors) <= DEFAULTS.free_form_max_bytes
    within = [prediction(100 + i, vector) for i, vector in enumerate(vectors)]
    too_many = [prediction(1000 + i, {"v": numbers(elements, 2)}) for i in range(100)]
    return largest + within + too_many, len(within)


@functools.cache
def hostile_improvements() -> tuple[list[bytes], int]:
    numbers = Numbers(random.Random(43))
    share = DEFAULTS.free_form_max_elements // 5 - 1
    names = ("old_value", "new_value", "performance_before", "performance_after",
             "improvement_metrics")
    within = [improvement(i, **{n: numbers(share, 4) for n in names}) for i in range(300)]
    too_deep = [improvement(1000 + i, new_value=nested(DEFAULTS.free_form_max_depth + 1))
                for i in range(50)]
    return within + too_deep, len(within)


async def test_hostile_free_form_fields_keep_ingest_under_its_memory_limit(
        stack: Any, any_db: str, tmp_path: Path) -> None:
    sent = {"predictions": hostile_predictions(), "improvements": hostile_improvements()}
    ingest = Ingest(ingest_environment(  # the production batch settings
        stack.kafka, any_db, CIE_BATCH_MAX_ROWS=str(DEFAULTS.batch_max_rows),
        CIE_BATCH_MAX_LATENCY_MS=str(DEFAULTS.batch_max_latency_ms)))
    await ingest.open()
    try:
        for topic, (values, _) in sent.items():
            await ingest.send_raw(topic, values)
        async with consume_subprocess(ingest.environment, tmp_path / "consume.log") as proc:
            for topic, (values, _) in sent.items():
                await ingest.drained(topic, len(values), timeout=180)
            peak = peak_resident_bytes(proc.pid)
        assert peak < pod_memory_limit(), (
            f"peak resident memory {peak / MIB:.0f} MiB; the pod may use "
            f"{pod_memory_limit() / MIB:.0f} MiB")

        conn = await asyncpg.connect(any_db)
        try:
            assert await conn.fetchval("SELECT count(*) FROM model_predictions") == (
                sent["predictions"][1])
            assert await conn.fetchval("SELECT count(*) FROM improvement_events") == (
                sent["improvements"][1])
        finally:
            await conn.close()
        for topic, (values, accepted) in sent.items():
            letters = await ingest.all_dead_letters(topic)
            assert len(letters) == len(values) - accepted
            assert {dict(d.headers)[DLQ_ERROR_CLASS] for d in letters} == {b"FreeFormTooLarge"}
    finally:
        await ingest.close()


ROLLUP_MANIFEST = MANIFEST.with_name("rollup-cronjob.yaml")
# a day inside the predictions' retention (the rollup leaves older days alone)
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)


async def test_a_busy_days_live_model_figures_keep_the_rollup_small(
    plain_db: str, stack: Stack,
) -> None:
    """`cie rollup` of a day of 200,000 validated predictions (varied confidences, regimes from
    bars) against the same run over a day of 400: its peak resident memory grows by less than
    48 MiB. Each prediction once came to the rollup as a row (~0.7 KiB once decoded): 30
    minutes of the soak's traffic took a run past 900 MiB, its CronJob's limit is 512 MiB;
    that code grew by ~300 MiB over 400,000 predictions, ~150 over these 200,000."""
    small = await rollup_peak(plain_db, stack, predictions=400)
    busy = await rollup_peak(plain_db, stack, predictions=200_000)
    limit = re.search(r"limits: \{[^}]*memory: (\d+)Mi\}", ROLLUP_MANIFEST.read_text())
    assert limit, f"no memory limit in {ROLLUP_MANIFEST}"
    assert busy - small < 48 * MIB, (small // MIB, busy // MIB)
    assert busy < int(limit.group(1)) * MIB // 2


async def rollup_peak(database_url: str, stack: Stack, *, predictions: int) -> int:
    """Peak RSS of one `cie rollup` after ``predictions`` validated predictions on one day."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("TRUNCATE model_predictions, market_conditions, rollup_pending, "
                           "model_performance")
        await conn.execute("""
            INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume,
                detected_regime)
            SELECT 'S' || s, $1::timestamptz + m * interval '1 minute', 100, 101, 99, 100, 1,
                   (ARRAY['trending_up', 'trending_down', 'ranging', 'volatile'])[1 + (m + s) % 4]
            FROM generate_series(0, 49) AS s, generate_series(0, 1439) AS m""", DAY)
        await conn.execute("""
            INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
                predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
                feature_vector, actual_direction, actual_return, prediction_accuracy,
                validated_at)
            SELECT gen_random_uuid(), 'busy', 'gbm', 'S' || (n % 50),
                   $2::timestamptz + (n::float8 / $1 * 86399) * interval '1 second', 15,
                   (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (hashtext(n::text) & 3) % 3],
                   (hashtext('c' || n) & 16383) % 10001 / 10000.0, '{}',
                   (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (hashtext('a' || n) & 3) % 3],
                   0.001, true, now()
            FROM generate_series(1, $1::int) AS n""", predictions, DAY)
        # as autovacuum would have by then: statistics taken while the insert was uncommitted
        # said the table was empty, and the planner's nested loops made the run quadratic
        await conn.execute("ANALYZE model_predictions, market_conditions")
    finally:
        await conn.close()
    env = cie_environment({"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
                           "CIE_LOG_FORMAT": "json", "CIE_LOG_LEVEL": "DEBUG"})
    peak, output = await asyncio.to_thread(peak_of, ["rollup"], env)
    assert '"live_model_days_recomputed": 1' in output, output[-2000:]
    return peak


# Runs `cie` and prints the process's own peak RSS as it exits. Not ru_maxrss from wait4:
# that keeps the peak from before exec, the forking test runner's (800 MiB late in a suite).
# VmHWM belongs to the address space exec made.
REPORT_PEAK = """
import atexit, runpy, sys
def report():
    status = open("/proc/self/status").read()
    print("VmHWM_KIB", status.split("VmHWM:")[1].split()[0], flush=True)
atexit.register(report)
sys.argv = ["cie", *sys.argv[1:]]
runpy.run_module("consumers", run_name="__main__")
"""


def peak_of(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run ``cie *args`` to its end: its own peak RSS and its output. It must succeed."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([sys.executable, "-c", REPORT_PEAK, *args], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            log.seek(0)
            raise AssertionError(f"cie {' '.join(args)} still running after {timeout} s: "
                                 f"{log.read().decode(errors='replace')[-2000:]}") from None
        log.seek(0)
        output = log.read().decode(errors="replace")
    assert process.returncode == 0, output[-2000:]
    peak = re.search(r"^VmHWM_KIB (\d+)$", output, re.MULTILINE)
    assert peak, output[-2000:]
    return int(peak.group(1)) * 1024, output
