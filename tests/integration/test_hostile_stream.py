"""100,000 messages from hostile producers through the real broker, consumer and database:
each one ends as a row exactly as sent or as a dead letter (never both, never neither), and
no SQL a message carries ever runs.

Half bars, half predictions; about four in ten are broken in one of many ways (random bytes,
invalid UTF-8, deep nesting, NUL characters, too many digits, NaN, values beyond their
columns, SQL in every text field, oversized values). SQL where the contract allows free text
(model versions and types, feature vectors) must be stored verbatim.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from consumers.ingest.kafka import DLQ_ERROR_CLASS, DLQ_TOPIC
from tests.support.clock import T0
from tests.support.harness import Ingest, ingest_environment
from tests.support.stack import Stack

PER_TOPIC = 50_000
MAX_VALUE_BYTES = 65_536
SQL = ["'); DROP TABLE canary; --", "x' OR '1'='1", "\"; DELETE FROM market_conditions; --",
       "$$; DROP TABLE canary; $$", "\\'; TRUNCATE canary; --", "E'\\\\x00'"]


def bar(i: int) -> dict[str, Any]:
    price = Decimal(100 + i % 50) + Decimal(i % 97) / 100
    return {"symbol": f"S{i % 400}", "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
            "open": str(price), "high": str(price + 1), "low": str(price - 1),
            "close": str(price), "volume": i}


def prediction(i: int) -> dict[str, Any]:
    return {"prediction_id": str(uuid.UUID(int=i + 1)), "model_version": "v1",
            "model_type": "lstm", "symbol": "AAPL",
            "predicted_at": (T0 + timedelta(seconds=i)).isoformat(),
            "prediction_horizon_minutes": 15, "predicted_direction": "LONG",
            "confidence_score": "0.75", "feature_vector": {"rsi": 55.5}}


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def broken(rng: random.Random, valid: dict[str, Any]) -> bytes:
    """One hostile variant of a valid message."""
    field = rng.choice(sorted(valid))
    kinds: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(0, 300)),
        lambda: as_bytes(valid)[:-1] + b"\xff\xfe}",  # invalid UTF-8
        lambda: b"[" * 3000 + b"]" * 3000,
        lambda: as_bytes({**valid, field: "a\u0000b"}),  # NUL: PostgreSQL text refuses it
        lambda: as_bytes({**valid, field: rng.choice(SQL)}),
        lambda: as_bytes({**valid, field: None}),
        lambda: as_bytes({k: v for k, v in valid.items() if k != field}),
        lambda: as_bytes(valid).replace(b'"', b"'"),
        lambda: as_bytes({**valid, field: "1" + "0" * 40}),
        lambda: as_bytes({**valid, field: "0.123456789012"}),
        lambda: as_bytes(valid)[: rng.randint(1, 40)],
        lambda: as_bytes({**valid, field: float("nan")}),
        lambda: as_bytes({**valid, "padding": "x" * (MAX_VALUE_BYTES + 10)}),
        lambda: as_bytes({**valid, field: [valid[field]] * 3}),
    ]
    return rng.choice(kinds)()


def with_sql_where_free_text_is_allowed(rng: random.Random, valid: dict[str, Any]) -> bytes:
    """Still valid: SQL in fields the contract lets be any text, to be stored verbatim."""
    if "model_version" in valid:
        return as_bytes({**valid, "model_version": rng.choice(SQL)[:20],
                         "model_type": rng.choice(SQL)[:30],
                         "feature_vector": {rng.choice(SQL): rng.choice(SQL), "n": 1}})
    return as_bytes(valid)


def key_of(value: bytes, topic: str) -> Any:
    """The row key a message names, or None when it names none a row could have."""
    try:
        data = json.loads(value)
        if topic == "bars":
            symbol = data["symbol"]
            return (symbol, datetime.fromisoformat(data["timestamp"])) if isinstance(
                symbol, str) else None
        return uuid.UUID(data["prediction_id"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


async def test_hostile_producers_lose_nothing_and_run_no_sql(stack: Stack, plain_db: str) -> None:
    ingest = Ingest(ingest_environment(stack.kafka, plain_db, CIE_BATCH_MAX_ROWS="2000",
                                       CIE_MAX_VALUE_BYTES=str(MAX_VALUE_BYTES)))
    await ingest.open()
    conn = await asyncpg.connect(plain_db)
    await conn.execute("CREATE TABLE canary (x int)")
    rng = random.Random(20261201)
    sent: dict[str, list[bytes]] = {"bars": [], "predictions": []}
    for i in range(PER_TOPIC):
        for topic, make in (("bars", bar), ("predictions", prediction)):
            valid = make(i)
            value = (broken(rng, valid) if rng.random() < 0.4
                     else with_sql_where_free_text_is_allowed(rng, valid))
            sent[topic].append(value)
    try:
        await ingest.start()
        for topic, values in sent.items():
            await ingest.send_raw(topic, values, key=None)
        for topic, values in sent.items():
            await ingest.drained(topic, len(values), timeout=240)

        bars = {(r["symbol"], r["timestamp"]): r for r in await conn.fetch(
            "SELECT * FROM market_conditions")}
        predictions = {r["prediction_id"]: r for r in await conn.fetch(
            "SELECT * FROM model_predictions")}
        assert await conn.fetchval("SELECT to_regclass('canary') IS NOT NULL")
        for topic, rows, check in (("bars", bars, same_bar), ("predictions", predictions,
                                                              same_prediction)):
            dead = await ingest.all_dead_letters(topic)
            letters = Counter(letter.value for letter in dead)
            assert all(dict(letter.headers)[DLQ_TOPIC] == ingest.topic(topic).encode()
                       for letter in dead)
            classes = {dict(letter.headers)[DLQ_ERROR_CLASS].decode() for letter in dead}
            assert {"DecodeError", "MessageTooLarge"} <= classes, classes
            expected_letters: Counter[bytes] = Counter()
            landed = 0
            for value in sent[topic]:
                key = key_of(value, topic)
                if key in rows:
                    check(rows[key], json.loads(value))  # a row, exactly as sent
                    landed += 1
                else:
                    expected_letters[value] += 1
            assert letters == expected_letters  # every other message a dead letter, once
            assert landed == len(rows) and landed + letters.total() == PER_TOPIC
            assert 0.5 * PER_TOPIC < landed < 0.7 * PER_TOPIC  # both outcomes well exercised
    finally:
        await conn.close()
        await ingest.close()


def same_bar(row: asyncpg.Record, sent: dict[str, Any]) -> None:
    assert row["symbol"] == sent["symbol"]
    assert row["timestamp"] == datetime.fromisoformat(sent["timestamp"])
    for column in ("open", "high", "low", "close"):
        assert row[column] == Decimal(str(sent[column])), column
    assert row["volume"] == sent["volume"]


def same_prediction(row: asyncpg.Record, sent: dict[str, Any]) -> None:
    for column in ("model_version", "model_type", "symbol"):
        assert row[column] == sent[column], column
    assert row["predicted_direction"] == sent.get("predicted_direction")  # optional
    confidence = sent.get("confidence_score")
    assert row["confidence_score"] == (None if confidence is None else Decimal(str(confidence)))
    assert json.loads(row["feature_vector"]) == sent["feature_vector"]
