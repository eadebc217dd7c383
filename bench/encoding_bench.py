r"""MessagePack against JSON: the same events, decoded alone and drained end to end.

    deploy/local/stack.sh up
    .venv/bin/python bench/encoding_bench.py [--bars 100000] [--fills 40000] [--rounds 2]
        [--timescaledb]

Each case's events (bars and fills as producers send them: varied values at full precision)
are produced twice by the project's own producer, once as JSON and once as MessagePack with
its content-type header, into two topics. Then, per case:
- decoding alone: the pipeline's ``accept`` (what the consumer does per message before the
  write: decode, check, encode the row) over every message, best of three passes, in
  microseconds a message;
- end to end: ``cie consume`` at its default batch settings draining each topic into the same
  emptied table, JSON and MessagePack alternating ``--rounds`` times, against the server's own
  COPY of the same rows measured before and after (ingest_bench.py's reference).
The machine is shared and noisy: compare the ratios within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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

import msgspec
from ingest_bench import (  # bench/, beside this script
    create_database,
    drop_database,
    end_to_end,
    reference_batches,
    server_copy_limit,
)
from positions_bench import varied_bars

from consumers.contracts.bars import Bar
from consumers.contracts.encoding import Encoding
from consumers.contracts.fills import Fill
from consumers.ingest.kafka import ensure_topics, make_producer
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import Pipeline
from consumers.ingest.pipelines.fills import FILL_COLUMNS, FillsPipeline
from consumers.platform.settings import Settings, load_settings
from consumers.producer import EventProducer, encode, pack

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


async def produce(settings: Settings, name: str, events: Sequence[Any],
                  encoding: Encoding) -> str:
    topic = f"bench-{name}-{encoding.value}-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic, f"{topic}.dlq"], partitions=PARTITIONS,
                        replication_factor=1)
    routed = msgspec.structs.replace(settings, topic_names={**settings.topic_names, name: topic})
    producer = make_producer(routed, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        typed = EventProducer(producer, routed, encoding)
        futures = [await typed.send(event) for event in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


def decode_us(pipeline: Pipeline, values: list[bytes], encoding: Encoding) -> float:
    """Microseconds a message for ``accept``, the best of three passes."""
    now = datetime.now(UTC)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for value in values:
            pipeline.accept(value, now, encoding)
        best = min(best, time.perf_counter() - started)
    return best / len(values) * 1e6


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
    for name, table, events, pipeline, columns in cases:
        if name not in args.cases:
            continue
        n = len(events)
        json_values, packed_values = [encode(e) for e in events], [pack(e) for e in events]
        case: dict[str, Any] = {
            "events": n,
            "bytes_per_message": {"json": round(sum(map(len, json_values)) / n, 1),
                                  "msgpack": round(sum(map(len, packed_values)) / n, 1)},
            "decode_us": {"json": round(decode_us(pipeline, json_values, Encoding.JSON), 2),
                          "msgpack": round(decode_us(pipeline, packed_values,
                                                     Encoding.MSGPACK), 2)}}
        print(f"{name}: {case['bytes_per_message']} bytes a message; decoding "
              f"{case['decode_us']} us a message", flush=True)
        topics = {encoding: await produce(settings, name, events, encoding)
                  for encoding in (Encoding.JSON, Encoding.MSGPACK)}
        rows = [msgspec.structs.astuple(e) for e in events]
        reference = functools.partial(reference_batches, name, table, columns, events, rows)
        rates: dict[str, list[float]] = {"json": [], "msgpack": []}
        servers = [server_copy_limit(url, reference(batch), n, logs)]
        for round_ in range(args.rounds):
            for encoding, topic in topics.items():
                rate, _, _ = await end_to_end(
                    settings, url, {f"CIE_TOPIC_{name.upper()}": topic}, table, n, batch,
                    logs / f"{name}-{encoding.value}-{round_}.log")
                rates[encoding.value].append(rate)
                print(f"{name} {encoding.value} round {round_ + 1}: {rate:,.0f}/s", flush=True)
        servers.append(server_copy_limit(url, reference(batch), n, logs))
        server = max(servers)
        case["end_to_end_per_s"] = {k: [round(r) for r in v] for k, v in rates.items()}
        case["server_copy_per_s"] = [round(s) for s in servers]
        case["ratio_to_server_copy"] = {k: round(statistics.median(v) / server, 3)
                                        for k, v in rates.items()}
        case["msgpack_to_json"] = round(
            statistics.median(rates["msgpack"]) / statistics.median(rates["json"]), 3)
        print(f"{name}: MessagePack {case['msgpack_to_json']:.2f}x JSON end to end; of the "
              f"server's COPY ({server:,.0f}/s): {case['ratio_to_server_copy']}", flush=True)
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
    parser.add_argument("--timescaledb", action="store_true",
                        help="hypertables (the extension must be installed)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
