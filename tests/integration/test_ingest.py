"""Every topic end to end on the real broker and database: exact values, corrections,
redelivery, dead letters, codecs and transactional producers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consumers.contracts.bars import Bar
from consumers.contracts.encoding import Encoding
from consumers.contracts.improvements import (
    AbTestResults,
    AbTestStarted,
    Improvement,
    OptimizationFailed,
    OptimizationScheduled,
    OptimizationStarted,
)
from consumers.contracts.predictions import Prediction, feature_hash
from consumers.ingest.checkpoint import Batch, Checkpoint
from consumers.ingest.kafka import DLQ_ERROR_CLASS, DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import EventTimeSettings, Rejection
from consumers.ingest.runner import let_others_run
from consumers.platform.db import Conn
from consumers.producer import encode
from consumers.topics import BY_NAME, Topic
from tests.support.builders import fill as build_fill
from tests.support.clock import T0
from tests.support.harness import Ingest, counter, eventually, ingest_environment
from tests.support.stack import Stack

# the fills these tests' expected figures were worked out with
fill = partial(build_fill, strategy="momentum", commission="0.25")


def bar(symbol: str, minute: int, close: str = "100.5", high: str = "101", low: str = "99") -> Bar:
    return Bar(symbol=symbol, timestamp=T0 + timedelta(minutes=minute), open=Decimal("100"),
               high=Decimal(high), low=Decimal(low), close=Decimal(close), volume=1000)


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_bars_land_exactly_and_a_correction_replaces_the_bar(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    precise = Bar(symbol="AAPL", timestamp=T0, open=Decimal("187.12345678"),
                  high=Decimal("9999999999.99999999"), low=Decimal("0.00000001"),
                  close=Decimal("187.00000001"), volume=9_000_000_000, rsi_14=Decimal("99.99"),
                  vix=Decimal("1234.5678"), spy_correlation=Decimal("-0.999"),
                  detected_regime="volatile", regime_confidence=Decimal("0.1234"))
    await ingest.send([precise])
    # a plain JSON producer, numbers as JSON numbers, another offset
    await ingest.send_raw("bars", [json.dumps({
        "symbol": "MSFT", "timestamp": (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00"), "open": 410.1, "high": 411,
        "low": 409.99999999, "close": 410.5, "volume": 12}).encode()], key=b"MSFT")
    assert await eventually(counter(url, "SELECT count(*) FROM market_conditions"), 2) == 2
    rows = {r["symbol"]: r for r in await fetch(url, "SELECT * FROM market_conditions")}
    aapl = rows["AAPL"]
    assert (aapl["open"], aapl["high"], aapl["low"], aapl["close"]) == (
        Decimal("187.12345678"), Decimal("9999999999.99999999"), Decimal("0.00000001"),
        Decimal("187.00000001"))
    assert (aapl["volume"], aapl["rsi_14"], aapl["vix"], aapl["spy_correlation"]) == (
        9_000_000_000, Decimal("99.99"), Decimal("1234.5678"), Decimal("-0.999"))
    assert str(rows["MSFT"]["low"]) == "409.99999999"
    assert rows["MSFT"]["timestamp"] == T0  # 15:30+01:00 is 14:30Z

    corrected = Bar(symbol="AAPL", timestamp=T0, open=Decimal("187.12345678"),
                    high=Decimal("190"), low=Decimal("186"), close=Decimal("189.5"), volume=7)
    await ingest.send([corrected])
    close = counter(url, "SELECT close FROM market_conditions WHERE symbol = 'AAPL'")
    assert await eventually(close, Decimal("189.5")) == Decimal("189.5")
    assert await counter(url, "SELECT count(*) FROM market_conditions")() == 2


async def test_predictions_land_once_with_their_feature_hash(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    prediction = Prediction(
        prediction_id=uuid.uuid4(), model_version="dir-v3", model_type="direction",
        symbol="NVDA", predicted_at=T0, prediction_horizon_minutes=15,
        predicted_direction="NEUTRAL", confidence_score=Decimal("0.8125"),
        predicted_volatility=Decimal("0.012345"), feature_vector={"rsi": Decimal("55.5")})
    await ingest.send([prediction, prediction])  # redelivered in the same batch
    raw_id = uuid.uuid4()
    await ingest.send_raw("predictions", [json.dumps({
        "prediction_id": str(raw_id), "model_version": "dir-v3", "model_type": "direction",
        "symbol": "NVDA", "predicted_at": (T0 + timedelta(minutes=5)).isoformat(),
        "prediction_horizon_minutes": 5, "feature_vector": {"ema_gap": -0.25},
        "feature_hash": "a" * 64}).encode()])
    assert await eventually(counter(url, "SELECT count(*) FROM model_predictions"), 2) == 2
    await ingest.send([prediction])  # and redelivered later
    await ingest.drained("predictions", 4)
    rows = {r["prediction_id"]: r for r in await fetch(url, "SELECT * FROM model_predictions")}
    assert len(rows) == 2
    stored = rows[prediction.prediction_id]
    assert (stored["predicted_direction"], stored["confidence_score"],
            stored["predicted_volatility"]) == ("NEUTRAL", Decimal("0.8125"), Decimal("0.012345"))
    assert json.loads(stored["feature_vector"]) == {"rsi": 55.5}
    assert stored["feature_hash"] == feature_hash({"rsi": Decimal("55.5")})
    assert rows[raw_id]["feature_hash"] == "a" * 64


async def test_partial_out_of_order_and_repeated_fills_give_one_exact_trade(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    trade = uuid.uuid4()
    buy1 = fill(trade, "BUY", 30, "50.10", 0)
    buy2 = fill(trade, "BUY", 20, "50.35", 2)
    sell1 = fill(trade, "SELL", 25, "51.00", 10)
    sell2 = fill(trade, "SELL", 25, "50.80", 15)
    # out of time order (the second opening fill after the first closing one), split over
    # two batches, then everything again
    await ingest.send([buy1, sell1])
    await ingest.send([sell2, buy2, buy1, buy2, sell2])
    outcome = counter(url, "SELECT outcome_type FROM trade_outcomes WHERE trade_id = $1", trade)
    assert await eventually(outcome, "WIN") == "WIN"
    await ingest.send([buy1, sell1])  # redelivered once more
    await ingest.drained("fills", 9)
    assert await counter(url, "SELECT count(*) FROM trade_fills")() == 4
    [row] = await fetch(url, "SELECT * FROM trade_outcomes")
    # entry = (30*50.10 + 20*50.35) / 50 = (1503 + 1007) / 50 = 50.2
    # exit  = (25*51 + 25*50.80) / 50 = (1275 + 1270) / 50 = 50.9
    # gross = 2545 - 2510 = 35; commission 4 * 0.25 = 1; net 34
    assert (row["direction"], row["quantity"], row["entry_price"], row["exit_price"]) == (
        "LONG", 50, Decimal("50.2"), Decimal("50.9"))
    assert (row["gross_pnl"], row["commission"], row["net_pnl"]) == (
        Decimal("35"), Decimal("1"), Decimal("34"))
    assert (row["entry_time"], row["exit_time"], row["duration_seconds"]) == (
        T0, T0 + timedelta(minutes=15), 900)
    assert await ingest.all_dead_letters("fills") == []


async def test_an_earlier_fill_arriving_late_moves_the_trade_key(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    trade = uuid.uuid4()
    await ingest.send([fill(trade, "BUY", 10, "10", 5)])
    entry = counter(url, "SELECT min(entry_time) FROM trade_outcomes WHERE trade_id = $1", trade)
    assert await eventually(entry, T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    await ingest.send([fill(trade, "BUY", 10, "12", 1)])
    assert await eventually(entry, T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=1)
    [row] = await fetch(url, "SELECT * FROM trade_outcomes")
    assert (row["quantity"], row["entry_price"]) == (20, Decimal("11"))


async def test_a_flipping_fill_goes_to_the_dead_letter_topic(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    trade = uuid.uuid4()
    opening, flipping = fill(trade, "SELL", 10, "20", 0), fill(trade, "BUY", 15, "19", 5)
    await ingest.send([opening])
    flipping_value = encode(flipping)
    await ingest.send_raw("fills", [flipping_value], key=str(trade).encode(),
                          headers=[("traceparent", b"00-abc-01"), ("source", b"oms-7")])
    await ingest.drained("fills", 2)
    [letter] = await ingest.all_dead_letters("fills")
    headers = dict(letter.headers)
    assert headers[DLQ_ERROR_CLASS] == b"LedgerError"
    assert b"would flip" in headers[DLQ_REASON]
    assert headers[DLQ_TOPIC] == ingest.topic("fills").encode()
    assert letter.key == str(trade).encode()
    assert letter.value == flipping_value  # the message as sent, byte for byte
    assert (headers["traceparent"], headers["source"]) == (b"00-abc-01", b"oms-7")
    row = counter(url, "SELECT outcome_type || ' ' || quantity FROM trade_outcomes")
    assert await row() == "OPEN 10"
    assert await counter(url, "SELECT count(*) FROM trade_fills")() == 1


async def test_improvement_events_apply_once_and_unknown_subjects_are_refused(
    ingest: Ingest,
) -> None:
    url = ingest.settings.database_url
    task, test = uuid.uuid4(), uuid.uuid4()
    schedule = OptimizationScheduled(
        event_id=uuid.uuid4(), task_id=task, task_type="hyperparameter", component_id="m1",
        frequency="daily", next_run_at=T0, config={"trials": 10})
    run = [OptimizationStarted(event_id=uuid.uuid4(), task_id=task, started_at=T0),
           OptimizationFailed(event_id=uuid.uuid4(), task_id=task, failed_at=T0,
                              error="attempt 1")]
    improvement = Improvement(event_id=uuid.uuid4(), event_type="model_deployed",
                              component_type="model", component_id="m1",
                              new_value={"version": "v2"})
    orphan = AbTestResults(event_id=uuid.uuid4(), test_id=test, control_metrics={},
                           treatment_metrics={})
    await ingest.send([schedule, *run, improvement, orphan])
    await ingest.send([schedule, *run, improvement])  # all redelivered
    await ingest.drained("improvements", 9)
    failed = counter(url, "SELECT consecutive_failures FROM optimization_queue WHERE task_id = $1",
                     task)
    [letter] = await ingest.all_dead_letters("improvements")
    assert dict(letter.headers)[DLQ_ERROR_CLASS] == b"UnknownSubject"
    assert letter.value == encode(orphan)
    assert await failed() == 1
    assert await counter(url, "SELECT count(*) FROM improvement_events")() == 1
    # the refused event is not remembered: once its test exists, a replay applies it
    started = AbTestStarted(event_id=uuid.uuid4(), test_id=test, test_name="t",
                            control_version="v1", treatment_version="v2", test_type="model",
                            control_traffic_percent=50, treatment_traffic_percent=50,
                            started_at=T0, success_metric="sharpe_ratio")
    await ingest.send([started, orphan])
    metrics = counter(url, "SELECT control_metrics IS NOT NULL FROM ab_tests WHERE test_id = $1",
                      test)
    assert await eventually(metrics, True) is True


async def test_a_poison_message_among_a_thousand(stack: Stack, plain_db: str) -> None:
    ingest = Ingest(ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="1000",
                                       CIE_BATCH_MAX_LATENCY_MS="2000"))
    await ingest.open()
    try:
        bars = [bar("AMD", minute) for minute in range(1000)]
        bars[500] = bar("AMD", 500, high="98")  # high < low: the database refuses it
        # one key: one partition, so the poison sits in the middle of the stream
        await ingest.send(bars)
        await ingest.start()
        url = plain_db
        await ingest.drained("bars", 1000)
        assert await counter(url, "SELECT count(*) FROM market_conditions")() == 999
        [letter] = await ingest.all_dead_letters("bars")
        headers = dict(letter.headers)
        assert headers[DLQ_ERROR_CLASS] == b"CheckViolationError"
        assert b"market_conditions_high_gte_low" in headers[DLQ_REASON]
        assert int(headers[DLQ_OFFSET]) == 500 and headers[DLQ_PARTITION].isdigit()
        assert letter.value == encode(bars[500])
    finally:
        await ingest.close()


async def test_undecodable_messages_are_dead_lettered_with_the_reason(ingest: Ingest) -> None:
    await ingest.send_raw("bars", [
        b"{not json",
        b'{"symbol": "AAPL", "timestamp": "2026-03-02T14:30:00", "open": 1, "high": 1, '
        b'"low": 1, "close": 1, "volume": 1}',
    ], key=b"AAPL")
    await ingest.send([bar("AAPL", 1)])
    await ingest.drained("bars", 3)
    letters = await ingest.all_dead_letters("bars")
    reasons = sorted(dict(letter.headers)[DLQ_REASON].decode() for letter in letters)
    assert reasons[0].startswith("Expected `datetime` with a timezone component")
    assert reasons[1].startswith("JSON is malformed")
    url = ingest.settings.database_url
    assert await counter(url, "SELECT count(*) FROM market_conditions")() == 1


class WatchedBars(BarsPipeline):
    """The bars pipeline, noting when it decodes a message."""

    def __init__(self, steps: list[str], times: EventTimeSettings | None = None) -> None:
        super().__init__(times)
        self.steps = steps

    def accept(self, value: bytes, now: datetime, encoding: Encoding = Encoding.JSON) -> Any:
        self.steps.append("decode")
        return super().accept(value, now, encoding)


async def test_the_next_batch_is_decoded_while_a_batch_is_written(
        stack: Stack, plain_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All the messages are fetched before the first batch is due, so fetching never waits:
    the loop must still let each flush run while it decodes the next batch, or writing and
    decoding take turns (half the throughput on two cores)."""
    steps: list[str] = []
    flush = Checkpoint.flush

    async def watched_flush(self: Checkpoint, topic: str, batch: Batch) -> None:
        """A flush, from its first step (the position's, before the rows) to its last."""
        steps.append("write")
        try:
            await flush(self, topic, batch)
        finally:
            steps.append("written")

    monkeypatch.setattr(Checkpoint, "flush", watched_flush)
    watched = Topic("bars", "bars", Bar, BY_NAME["bars"].key,
                    lambda times, _: WatchedBars(steps, times))
    ingest = Ingest(ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="100",
                                       CIE_BATCH_BACKLOG_MAX_ROWS="100",  # batches of 100
                                       CIE_BATCH_MAX_LATENCY_MS="5000"), table=[watched])
    await ingest.open()
    try:
        await ingest.send([bar("ONE", minute) for minute in range(1000)])  # one partition
        await ingest.start()
        await ingest.drained("bars", 1000)
    finally:
        await ingest.close()
    assert steps.count("decode") == 1000 and steps.count("write") >= 10
    overlapped = 0  # messages decoded while a write was in flight
    writing = False
    for step in steps:
        writing = step == "write" or (writing and step != "written")
        overlapped += writing and step == "decode"
    assert overlapped >= 500, steps


class SlowBars(BarsPipeline):
    """The bars pipeline with a slow database: each write takes 0.2 s more, and its size is
    noted."""

    def __init__(self, sizes: list[int], times: EventTimeSettings | None = None) -> None:
        super().__init__(times)
        self.sizes = sizes

    async def write_new(self, conn: Conn, events: Sequence[Any]) -> list[Rejection] | None:
        self.sizes.append(len(events))
        await asyncio.sleep(0.2)
        return await super().write_new(conn, events)


async def test_a_due_batch_grows_while_a_flush_is_in_flight(
        stack: Stack, plain_db: str) -> None:
    """Under a backlog the loop does not wait for the writer with a full batch: the next
    batch keeps taking messages while the flush ahead is written, up to the backlog's limit,
    and every message lands once."""
    sizes = await slow_drain(stack, plain_db, CIE_BATCH_BACKLOG_MAX_ROWS="300")
    assert max(sizes) == 300 and min(sizes[:-1]) >= 100, sizes  # the last may be short
    assert sizes.count(300) >= 2, sizes


async def test_a_growing_batch_stops_at_its_byte_limit(stack: Stack, plain_db: str) -> None:
    """However many rows the backlog's limit allows, a growing batch stops taking messages
    once it holds CIE_BATCH_BACKLOG_MAX_BYTES (it may finish the fetch it is decoding)."""
    held = held_per_bar()
    sizes = await slow_drain(stack, plain_db, CIE_BATCH_BACKLOG_MAX_ROWS="100000",
                             CIE_BATCH_MAX_BYTES=str(100 * held),
                             CIE_BATCH_BACKLOG_MAX_BYTES=str(200 * held))
    assert max(sizes) > 100, sizes  # it grew
    assert max(sizes) <= 2 * 200 + 50, sizes  # and stopped near 200 bars' bytes, not at 900


async def test_a_batch_is_due_at_its_byte_limit(stack: Stack, plain_db: str) -> None:
    """A batch of large messages is written before it has CIE_BATCH_MAX_ROWS of them."""
    held = held_per_bar()
    sizes = await slow_drain(stack, plain_db, CIE_BATCH_MAX_BYTES=str(30 * held),
                             CIE_BATCH_BACKLOG_MAX_BYTES=str(30 * held))
    assert max(sizes) < 100 and len(sizes) >= 1000 // 60, sizes  # not batches of 100 rows


def held_per_bar() -> int:
    """What one of slow_drain's bars adds to its batch's byte account."""
    pipeline = BarsPipeline()
    value = encode(bar("ONE", 0))
    return len(value) + pipeline.held_bytes(pipeline.accept(value, datetime.now(UTC)))


async def slow_drain(stack: Stack, plain_db: str, **settings: str) -> list[int]:
    """1,000 bars on one partition through a slow writer, batches of 100: the sizes written."""
    sizes: list[int] = []
    slow = Topic("bars", "bars", Bar, BY_NAME["bars"].key, lambda times, _: SlowBars(sizes, times))
    ingest = Ingest(ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="100",
                                       CIE_BATCH_MAX_LATENCY_MS="5000", **settings),
                    table=[slow])
    await ingest.open()
    try:
        await ingest.send([bar("ONE", minute) for minute in range(1000)])
        await ingest.start()
        await ingest.drained("bars", 1000)
    finally:
        await ingest.close()
    assert sum(sizes) == 1000, sizes  # each once: no batch written twice, none lost
    rows = await fetch(plain_db, "SELECT count(*), count(DISTINCT timestamp) FROM "
                                 "market_conditions WHERE symbol = 'ONE'")
    assert tuple(rows[0]) == (1000, 1000)
    return sizes


async def test_a_flush_gets_each_reply_before_the_next_decoding_pass(plain_db: str) -> None:
    """A flush waits for several replies (a fills flush for nine): each must be taken up after
    the decoding pass during which it arrived, not two passes later, or each round trip of a
    flush takes 20-30 ms while the loop decodes."""
    conn = await asyncpg.connect(plain_db)
    passes = 0
    waited: list[int] = []  # decoding passes each round trip took

    async def flush() -> None:
        await conn.fetchval("SELECT 1")  # prepared once: one round trip each from here on
        for _ in range(20):
            start = passes
            await conn.fetchval("SELECT 1")
            waited.append(passes - start)

    try:
        writing = asyncio.create_task(flush())
        deadline = time.monotonic() + 30
        while not writing.done() and time.monotonic() < deadline:
            # a decoding pass: holds the loop, for longer than a round trip takes
            time.sleep(0.02)  # noqa: ASYNC251
            passes += 1
            await let_others_run()
        await asyncio.wait_for(writing, 5)
    finally:
        await conn.close()
    assert sorted(waited)[len(waited) // 2] <= 1, waited  # one yield a pass: 3


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_are_consumed(stack: Stack, plain_db: str, codec: str) -> None:
    ingest = Ingest(ingest_environment(stack.kafka, plain_db))
    await ingest.open()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, compression_type=codec,
                                    linger_ms=20)
        await producer.start()
        try:
            for minute in range(50):
                await producer.send(ingest.topic("bars"), key=b"ZS", value=json.dumps({
                    "symbol": "ZS", "timestamp": (T0 + timedelta(minutes=minute)).isoformat(),
                    "open": "10", "high": "11", "low": "9", "close": "10.5",
                    "volume": minute}).encode())
            await producer.flush()
        finally:
            await producer.stop()
        await ingest.start()
        total = counter(plain_db, "SELECT sum(volume) FROM market_conditions")
        assert await eventually(total, sum(range(50))) == sum(range(50))
    finally:
        await ingest.close()


async def test_aborted_transactions_are_never_read(stack: Stack, plain_db: str) -> None:
    ingest = Ingest(ingest_environment(stack.kafka, plain_db))
    await ingest.open()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka,
                                    transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
        await producer.start()
        try:
            # same key, same partition: the aborted bar sits before the committed one
            for symbol, commit in (("DROP", False), ("KEEP", True)):
                await producer.begin_transaction()
                sent = await producer.send(ingest.topic("bars"), key=b"X", value=json.dumps({
                    "symbol": symbol, "timestamp": T0.isoformat(), "open": 1, "high": 1,
                    "low": 1, "close": 1, "volume": 1}).encode())
                await sent
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()
        await ingest.start()
        symbols = counter(plain_db, "SELECT string_agg(symbol, ',') FROM market_conditions")
        assert await eventually(symbols, "KEEP") == "KEEP"
    finally:
        await ingest.close()
