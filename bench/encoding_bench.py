r"""Every wire format against JSON: the same events, decoded alone and drained end to end.

    deploy/local/stack.sh up
    .venv/bin/python bench/encoding_bench.py [--bars 100000] [--fills 40000] [--rounds 2]
        [--encodings json,msgpack,avro,protobuf] [--timescaledb]

Each case's events (bars and fills as producers send them: varied values at full precision)
are produced once per encoding into a topic of its own: JSON and MessagePack by the
project's producer; Avro and Protobuf registered in the stack's schema registry
(CIE_SCHEMA_REGISTRY_URL, `cie contracts register`'s schemas) and framed as registry
serializers frame them (written here with fastavro and the protobuf runtime, the libraries
those serializers use). Then, per case:
- decoding alone: the pipeline's ``accept`` (what the consumer does per message before the
  write: decode, check, encode the row) over every message, best of three passes, in
  microseconds a message;
- end to end: ``cie consume`` at its default batch settings draining each topic into the same
  emptied table, the encodings taking turns ``--rounds`` times (the whole drain's rate, and
  the consumer's CPU per 1,000 rows between 10 % and 90 % of them), against the server's own
  COPY of the same rows measured before and after (ingest_bench.py's reference).
The machine is shared and noisy: compare the ratios within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import msgspec
from ingest_bench import (  # bench/, beside this script
    create_database,
    drop_database,
    end_to_end,
    flushes,
    reference_batches,
    server_copy_limit,
    stamp,
)
from positions_bench import varied_bars

from consumers import topics
from consumers.contracts.avro import avro_schema
from consumers.contracts.bars import Bar
from consumers.contracts.encoding import Encoding
from consumers.contracts.fills import Fill
from consumers.contracts.protobuf import message_classes, proto_messages
from consumers.contracts.registered import KINDS, registered_schema
from consumers.ingest.kafka import ensure_topics, make_producer
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import Pipeline
from consumers.ingest.pipelines.fills import FILL_COLUMNS, FillsPipeline
from consumers.ingest.schemas import Schemas
from consumers.platform.registry import RegisteredSchema, RegistryClient
from consumers.platform.settings import Settings, load_settings
from consumers.producer import MSGPACK_HEADERS, encode, pack

PARTITIONS = 4
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def varied_fills(n: int, rng: random.Random) -> list[Fill]:
    """Trades of four fills (two opening, two closing) at varied full-precision prices."""
    out = []
    for t in range(n // 4):
        trade, at = uuid.uuid4(), T0 + timedelta(seconds=t)
        base = rng.uniform(5, 900)
        for k, (side, quantity) in enumerate((("BUY", 30), ("BUY", 20), ("SELL", 25),
                                              ("SELL", 25))):
            price = Decimal(f"{base * rng.uniform(0.99, 1.01):.8f}")
            out.append(Fill(
                fill_id=uuid.uuid4(), trade_id=trade, strategy_id=f"strat-{t % 20}",
                model_version="v1", symbol=f"S{t % 500:03d}", side=side,  # type: ignore[arg-type]
                quantity=quantity, price=price, commission=Decimal(f"{rng.uniform(0, 2):.4f}"),
                intended_price=price, filled_at=at + timedelta(milliseconds=k)))
    return out


def framed_values(name: str, contract: Any, events: Sequence[Any], encoding: Encoding,
                  schema_id: int) -> list[bytes]:
    """``events`` as a registry serializer writes them: zero byte, schema id, payload."""
    head = b"\x00" + schema_id.to_bytes(4, "big")
    if encoding is Encoding.AVRO:
        parsed = fastavro.parse_schema(avro_schema(contract))
        out = []
        for event in events:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, parsed, msgspec.to_builtins(
                event, builtin_types=(Decimal, datetime, uuid.UUID)))
            out.append(head + buffer.getvalue())
        return out
    (spec,) = proto_messages(contract)
    (cls,) = message_classes([spec])
    strings = [f.name for f in spec.fields if f.type_name == "string"]
    out = []
    for event in events:
        values = msgspec.structs.asdict(event)
        for field in strings:
            value = values[field]
            if value is None:
                del values[field]
            elif not isinstance(value, str):
                values[field] = (format(value, "f") if isinstance(value, Decimal)
                                 else value.isoformat() if isinstance(value, datetime)
                                 else str(value))
        out.append(head + b"\x00" + cls(**values).SerializeToString())  # message index [0]
    return out


async def register(settings: Settings, topic: str, contract: Any, encoding: Encoding) -> int:
    if not settings.schema_registry_url:
        raise SystemExit("CIE_SCHEMA_REGISTRY_URL is not set: "
                         "eval \"$(deploy/local/stack.sh env)\"")
    client = RegistryClient(settings.schema_registry_url, 10)
    try:
        fmt = encoding.value
        return await client.register(f"{topic}-value", KINDS[fmt],
                                     registered_schema(fmt, contract))
    finally:
        await client.close()


async def produce(settings: Settings, name: str, contract: Any, events: Sequence[Any],
                  encoding: Encoding) -> tuple[str, list[bytes]]:
    """A topic of its own holding ``events`` in ``encoding``, and the values sent."""
    topic = f"bench-{name}-{encoding.value}-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic, f"{topic}.dlq"], partitions=PARTITIONS,
                        replication_factor=1)
    routed = msgspec.structs.replace(settings, topic_names={**settings.topic_names, name: topic})
    if encoding in (Encoding.JSON, Encoding.MSGPACK):
        values = [encode(e) if encoding is Encoding.JSON else pack(e) for e in events]
        headers = [] if encoding is Encoding.JSON else MSGPACK_HEADERS
    else:
        schema_id = await register(settings, topic, contract, encoding)
        values, headers = framed_values(name, contract, events, encoding, schema_id), []
    key = topics.BY_NAME[name].key
    producer = make_producer(routed, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key(e), value=v, headers=headers or None)
                   for e, v in zip(events, values, strict=True)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic, values


def decode_us(pipeline: Pipeline, values: list[bytes], encoding: Encoding) -> float:
    """Microseconds a message for what the consumer does with it before the write (unframe,
    decode, check, encode the row), the best of three passes."""
    now = datetime.now(UTC)
    best = float("inf")
    schemas = Schemas(None)
    if encoding in (Encoding.AVRO, Encoding.PROTOBUF):  # as Schemas.learn leaves it
        fmt = encoding.value
        schemas.remember(RegisteredSchema(
            int.from_bytes(values[0][1:5], "big"), KINDS[fmt],
            registered_schema(fmt, pipeline.event_type), frozenset({"bench-value"})))
    for _ in range(3):
        started = time.perf_counter()
        for value in values:
            if encoding in (Encoding.JSON, Encoding.MSGPACK):
                pipeline.accept(value, now, encoding)
            else:
                framed = schemas.framed(value, "bench")
                assert framed is not None
                pipeline.accept(framed.payload, now, encoding, framed)
        best = min(best, time.perf_counter() - started)
    return best / len(values) * 1e6


def drain_rate(log: Path) -> float:
    """Messages a second from the first flush's start to the last one's end: the whole drain.

    Not ingest_bench's steady_rate, which stops at the first partition to run dry: one process
    fetches a topic of small messages (Avro's bars are a quarter of JSON's) a partition at a
    time, so that window can hold one partition's three flushes and the consumer's start."""
    done = flushes(log)
    started = min(stamp(f) - float(f["seconds"]) for f in done)
    return sum(int(f["messages"]) for f in done) / (max(stamp(f) for f in done) - started)


async def measure(args: argparse.Namespace, settings: Settings, url: str) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="cie-encoding-bench-"))
    print(f"consumer logs: {logs}", flush=True)
    rng = random.Random(5)
    cases: list[tuple[str, str, list[Any], Pipeline, Sequence[str]]] = [
        ("bars", "market_conditions", varied_bars(args.bars, rng), BarsPipeline(),
         tuple(Bar.__struct_fields__)),
        ("fills", "trade_fills", varied_fills(args.fills, rng), FillsPipeline(), FILL_COLUMNS),
    ]
    batch = settings.batch_max_rows  # the consumer's default
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(),
                               "path": "timescaledb" if args.timescaledb else "plain",
                               "batch_max_rows": batch, "cases": {}}
    encodings = [Encoding(e) for e in args.encodings]
    for name, table, events, pipeline, columns in cases:
        if name not in args.cases:
            continue
        n = len(events)
        contract = topics.BY_NAME[name].contract
        produced = {e: await produce(settings, name, contract, events, e) for e in encodings}
        case: dict[str, Any] = {
            "events": n,
            "bytes_per_message": {e.value: round(sum(map(len, v)) / n, 1)
                                  for e, (_, v) in produced.items()},
            "decode_us": {e.value: round(decode_us(pipeline, v, e), 2)
                          for e, (_, v) in produced.items()}}
        print(f"{name}: {case['bytes_per_message']} bytes a message; decoding "
              f"{case['decode_us']} us a message", flush=True)
        rows = [msgspec.structs.astuple(e) for e in events]
        reference = functools.partial(reference_batches, name, table, columns, events, rows)
        rates: dict[str, list[float]] = {e.value: [] for e in encodings}
        cpu: dict[str, list[float]] = {e.value: [] for e in encodings}
        servers = [server_copy_limit(url, reference(batch), n, logs)]
        for round_ in range(args.rounds):
            for encoding, (topic, _) in produced.items():
                log = logs / f"{name}-{encoding.value}-{round_}.log"
                _, _, cost = await end_to_end(
                    settings, url, {f"CIE_TOPIC_{name.upper()}": topic}, table, n, batch, log)
                rate = drain_rate(log)
                rates[encoding.value].append(rate)
                if cost is not None:
                    cpu[encoding.value].append(cost.consumer_cpu_ms)
                print(f"{name} {encoding.value} round {round_ + 1}: {rate:,.0f}/s, consumer "
                      f"{cost.consumer_cpu_ms if cost else '?'} CPU ms per 1,000", flush=True)
        servers.append(server_copy_limit(url, reference(batch), n, logs))
        server = max(servers)
        json_rate = statistics.median(rates["json"]) if rates.get("json") else None
        case["end_to_end_per_s"] = {k: [round(r) for r in v] for k, v in rates.items()}
        case["server_copy_per_s"] = [round(s) for s in servers]
        case["ratio_to_server_copy"] = {k: round(statistics.median(v) / server, 3)
                                        for k, v in rates.items()}
        if json_rate:
            case["ratio_to_json"] = {k: round(statistics.median(v) / json_rate, 3)
                                     for k, v in rates.items()}
        # The consumer's CPU for the same rows is steadier than its rate on a shared machine:
        # JSON's CPU over each encoding's, so that above 1 is cheaper, as for the rates.
        case["consumer_cpu_ms_per_1000"] = cpu
        if cpu.get("json") and all(cpu.values()):
            json_cpu = statistics.median(cpu["json"])
            case["cpu_ratio_to_json"] = {k: round(json_cpu / statistics.median(v), 3)
                                         for k, v in cpu.items()}
        print(f"{name}: of the server's COPY ({server:,.0f}/s): "
              f"{case['ratio_to_server_copy']}; against JSON: {case.get('ratio_to_json')}; "
              f"consumer CPU against JSON's: {case.get('cpu_ratio_to_json')}", flush=True)
        results["cases"][name] = case
    return results


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    name = f"cie_encoding_bench_{os.getpid()}"
    url = await create_database(settings, name, args.timescaledb)
    try:
        results = await measure(args, settings, url)
    finally:
        await drop_database(settings, name)
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--fills", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", type=lambda s: s.split(","), default=["bars", "fills"])
    parser.add_argument("--encodings", type=lambda s: s.split(","),
                        default=["json", "msgpack", "avro", "protobuf"])
    parser.add_argument("--timescaledb", action="store_true",
                        help="hypertables (the extension must be installed)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
