"""Producers that serialize through a schema registry (issue #44): `cie contracts register`
puts each topic's contract in the stack's real registry (Apicurio), confluent-kafka's own
Avro and JSON Schema serializers write the four topics, and every row lands as the JSON path
lands it. Evolution, unknown and foreign schema ids, and a registry outage."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from confluent_kafka.serialization import MessageField, SerializationContext

from consumers import topics
from consumers.contracts.avro import avro_schema, avro_schema_text
from consumers.contracts.bars import Bar
from consumers.contracts.registered import registered_schema
from consumers.demo import session
from consumers.errors import UnknownSchema
from consumers.ingest.schemas import Schemas
from consumers.platform.registry import RegistryClient
from tests.support.chaos import snapshot
from tests.support.cie import run_cie
from tests.support.harness import Ingest, counter, eventually, ingest_all, ingest_environment
from tests.support.registry import (
    JAVA_PRODUCER,
    REGISTRY_URL,
    Relay,
    java_classpath,
    java_lines,
    produce,
    registry_client,
    serializer,
)
from tests.support.stack import REPO, Stack

SHORT_NAMES = tuple(topics.BY_NAME)


def events(seed: int, minutes: int = 30) -> list[Any]:
    start = (datetime.now(UTC) - timedelta(days=1, minutes=minutes)).replace(
        second=0, microsecond=0)
    return session(random.Random(seed), start=start, minutes=minutes, symbols=["AAPL", "X"])


async def register(environment: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    status, out = await run_cie("contracts", "register", *args, env={
        **environment, "CIE_SCHEMA_REGISTRY_URL": REGISTRY_URL})
    return status, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "json"])
async def test_registry_serialized_producers_land_every_topic_as_json_does(
        stack: Stack, any_db: str, twin_db: str, fmt: str) -> None:
    """The twin database is fed the same values in plain JSON: for Avro and Protobuf, our
    producer's JSON of the same events; for JSON Schema, the very JSON the serializer
    framed."""
    sent_events = events(seed=21)
    counts = {name: sum(1 for e in sent_events if topics.of_event(e).name == name)
              for name in SHORT_NAMES}
    payloads: list[bytes] = []

    async def through_the_registry(ingest: Ingest) -> dict[str, int]:
        # confluent-kafka's Protobuf serializer registers its own descriptor (base64), which
        # Apicurio 2.4 cannot parse for a compatibility check (tests/support/registry.py)
        rule = ("--compatibility", "NONE") if fmt == "protobuf" else ()
        status, lines = await register(ingest.environment, "--format", fmt, *rule)
        assert status == 0, lines
        assert {line["subject"] for line in lines} \
            == {f"{ingest.topic(name)}-value" for name in SHORT_NAMES}
        with registry_client() as client:
            serializers = {type(e): serializer(
                fmt, registered_schema(fmt, topics.of_event(e).contract), client, kind=type(e))
                for e in sent_events}
            messages = [(ingest.topic(t.name), t.key(e), e, serializers[type(e)])
                        for e in sent_events for t in [topics.of_event(e)]]
            framed = await asyncio.to_thread(produce, stack.kafka, messages)
        assert all(value[0] == 0 for value in framed)  # the registry's framing
        payloads.extend(value[5:] for value in framed)
        return counts

    async def as_json(ingest: Ingest) -> dict[str, int]:
        if fmt != "json":
            await ingest.send(sent_events)
        else:
            await ingest.send_each([(ingest.topic(t.name), t.key(e), payload, ())
                                    for e, payload in zip(sent_events, payloads, strict=True)
                                    for t in [topics.of_event(e)]])
        return counts

    letters = await ingest_all(stack.kafka, any_db, through_the_registry,
                               CIE_SCHEMA_REGISTRY_URL=REGISTRY_URL)
    assert letters == []
    assert await ingest_all(stack.kafka, twin_db, as_json) == []
    registered, plain = await snapshot(any_db), await snapshot(twin_db)
    for table, rows in plain.items():
        assert registered[table] == rows, table
    assert sum(len(rows) for rows in plain.values()) >= len(sent_events) // 2


async def test_a_java_producer_with_apicurios_avro_serializer_lands_bars_as_json_does(
        stack: Stack, any_db: str, twin_db: str, tmp_path: Path) -> None:
    """A JVM shop's producer: Kafka's client with Apicurio's AvroKafkaSerializer in
    Confluent's framing, finding the schema `cie contracts register` put under the subject."""
    bars = [e for e in events(seed=17) if isinstance(e, Bar)]
    classpath = await asyncio.to_thread(java_classpath, REPO / ".stack" / "java-producer")
    schema_file = tmp_path / "bar.avsc"
    schema_file.write_text(avro_schema_text(Bar))
    registry_v2 = REGISTRY_URL.replace("/apis/ccompat/v7", "/apis/registry/v2")

    async def from_java(ingest: Ingest) -> dict[str, int]:
        status, lines = await register(ingest.environment)
        assert status == 0, lines
        java = await asyncio.create_subprocess_exec(
            "java", "-cp", classpath, str(JAVA_PRODUCER / "AvroProducer.java"), stack.kafka,
            registry_v2, ingest.topic("bars"), str(schema_file),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(java.communicate(java_lines(bars)), timeout=120)
        assert java.returncode == 0 and f"sent {len(bars)}" in out.decode(), out.decode()[-2000:]
        return {"bars": len(bars)}

    async def as_json(ingest: Ingest) -> dict[str, int]:
        await ingest.send(bars)
        return {"bars": len(bars)}

    assert await ingest_all(stack.kafka, any_db, from_java,
                            CIE_SCHEMA_REGISTRY_URL=REGISTRY_URL) == []
    assert await ingest_all(stack.kafka, twin_db, as_json) == []
    from_avro, plain = await snapshot(any_db), await snapshot(twin_db)
    assert from_avro["market_conditions"] == plain["market_conditions"]
    assert sum(plain["market_conditions"].values()) == len(bars)


async def test_an_evolved_contract_is_a_new_version_and_old_and_new_producers_land_together(
        stack: Stack, plain_db: str) -> None:
    """A new optional field registers as a new version under BACKWARD; producers on either
    version write the same topic at once; a change the rule forbids is refused, saying why."""
    bars = [e for e in events(seed=5, minutes=20) if isinstance(e, Bar)]
    old_schema = avro_schema(Bar)
    new_schema = {**old_schema, "fields": [
        *old_schema["fields"], {"name": "venue", "type": ["null", "string"], "default": None}]}

    async def two_versions(ingest: Ingest) -> dict[str, int]:
        status, lines = await register(ingest.environment)
        assert status == 0, lines
        subject = f"{ingest.topic('bars')}-value"
        client = RegistryClient(REGISTRY_URL, 5)
        try:
            first = next(line["id"] for line in lines if line["subject"] == subject)
            second = await client.register(subject, "AVRO", json.dumps(new_schema))
        finally:
            await client.close()
        assert second != first
        topic = ingest.topic("bars")
        with registry_client() as client:
            # an old producer, by the version it was built with; a new one, by the latest
            old = serializer("avro", avro_schema_text(Bar), client, latest=False)
            new = serializer("avro", json.dumps(new_schema), client, extra={"venue": "XNAS"})
            messages = [(topic, bar.symbol.encode(), bar, old if i % 2 else new)
                        for i, bar in enumerate(bars)]
            await asyncio.to_thread(produce, stack.kafka, messages)
        return {"bars": len(bars)}

    letters = await ingest_all(stack.kafka, plain_db, two_versions,
                               CIE_SCHEMA_REGISTRY_URL=REGISTRY_URL)
    assert letters == []
    stored = await counter(plain_db, "SELECT count(*) FROM market_conditions")()
    assert stored == len(bars)

    # A subject whose last version typed volume as text: our contract (a long) would not read
    # what was written with it, and BACKWARD refuses it; the command says why and exits 1.
    environment = ingest_environment(stack.kafka, plain_db)
    subject = f"{environment['CIE_TOPIC_BARS']}-value"
    client = RegistryClient(REGISTRY_URL, 5)
    try:
        await client.register(subject, "AVRO", json.dumps({**old_schema, "fields": [
            {**f, "type": "string"} if f["name"] == "volume" else f
            for f in old_schema["fields"]]}))
    finally:
        await client.close()
    status, lines = await register(environment)
    assert status == 1
    (refused,) = [line for line in lines if line["subject"] == subject]
    assert "409" in refused["refused"] and "/fields/6 (volume)" in refused["refused"], refused


async def test_unknown_and_foreign_schema_ids_and_bad_payloads_are_dead_letters(
        stack: Stack, plain_db: str) -> None:
    bar = next(e for e in events(seed=9) if isinstance(e, Bar))

    async def send(ingest: Ingest) -> dict[str, int]:
        status, lines = await register(ingest.environment)
        assert status == 0, lines
        ids = {line["subject"]: line["id"] for line in lines}
        fills_id = ids[f"{ingest.topic('fills')}-value"]
        with registry_client() as client:
            good = serializer("avro", json.dumps(avro_schema(Bar)), client)
            framed = good(bar, SerializationContext(ingest.topic("bars"), MessageField.VALUE))
        unknown_id = b"\x00" + (2**31 - 7).to_bytes(4, "big") + framed[5:]
        foreign = b"\x00" + fills_id.to_bytes(4, "big") + framed[5:]
        cut_short = framed[:12]
        await ingest.send_raw("bars", [unknown_id, foreign, cut_short, framed], key=b"AAPL")
        return {"bars": 4}

    letters = await ingest_all(stack.kafka, plain_db, send, CIE_SCHEMA_REGISTRY_URL=REGISTRY_URL)
    reasons = sorted(letters)
    assert [error for error, _ in reasons] == ["DecodeError", "UnknownSchema", "UnknownSchema"]
    assert any("is not in the schema registry" in reason for _, reason in reasons)
    assert any("-value, not " in reason for _, reason in reasons), reasons
    assert await counter(plain_db, "SELECT count(*) FROM market_conditions")() == 1


async def test_a_registry_outage_pauses_ingest_and_dead_letters_nothing(
        stack: Stack, plain_db: str) -> None:
    """The consumer reaches the registry through a relay the test cuts: while it is cut,
    nothing is written and nothing dead-lettered; restored, every message lands."""
    upstream = urlsplit(REGISTRY_URL)
    relay = Relay((upstream.hostname or "127.0.0.1", upstream.port or 80))
    await relay.restore()
    through_relay = REGISTRY_URL.replace(f":{upstream.port}", f":{relay.port}")
    bars = [e for e in events(seed=13, minutes=10) if isinstance(e, Bar)]
    environment = ingest_environment(stack.kafka, plain_db,
                                     CIE_SCHEMA_REGISTRY_URL=through_relay,
                                     CIE_RETRY_BACKOFF_MAX_MS="500")
    ingest = Ingest(environment)
    await ingest.open()
    try:
        status, lines = await register(environment)
        assert status == 0, lines
        await relay.cut()
        await ingest.start()
        with registry_client() as client:
            good = serializer("avro", json.dumps(avro_schema(Bar)), client)
            await asyncio.to_thread(produce, stack.kafka, [
                (ingest.topic("bars"), b.symbol.encode(), b, good) for b in bars])
        stored = counter(plain_db, "SELECT count(*) FROM market_conditions")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # bounded: the outage lasts 4 s
            assert await stored() == 0
            await asyncio.sleep(0.5)
        assert await ingest.committed("bars") == 0
        await relay.restore()
        assert await eventually(stored, len(bars), timeout=60) == len(bars)
        await ingest.drained("bars", len(bars))
        assert await ingest.all_dead_letters("bars") == []
    finally:
        await relay.cut()
        await ingest.close()


async def test_made_up_schema_ids_are_looked_up_once_and_only_the_latest_kept() -> None:
    """A hostile producer can frame messages with billions of made-up ids: each is asked of
    the registry once per fetch at most, and the memory of refusals is bounded."""
    made_up = [2**31 - 1, 2**31 - 2, 2**31 - 3]
    schemas = Schemas(RegistryClient(REGISTRY_URL, 5), absent_kept=2)
    try:
        framed = [b"\x00" + i.to_bytes(4, "big") + b"payload" for i in made_up]
        assert schemas.unknown(framed) == set(made_up)
        await schemas.learn(made_up)
        # forgotten: the first of the three looked up (in id order)
        assert schemas.unknown(framed) == {min(made_up)}
        for value in framed:  # an id forgotten after its lookup is still refused as absent
            with pytest.raises(UnknownSchema, match="is not in the schema registry"):
                schemas.framed(value, "bars")
    finally:
        await schemas.close()
