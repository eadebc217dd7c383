r"""`cie consume` against the sinks people would pick instead, on one topic, in one run.

    deploy/local/stack.sh up
    bench/peers/setup.sh                      # once: Telegraf, Quix Streams, Kafka Connect
    .venv/bin/python bench/peers/run.py [--bars 600000] [--timescaledb]
        [--sinks cie,cie-10000,telegraf,quix,debezium]

One topic of bars (50 symbols, 4 partitions, the producers' JSON) is produced once. Each sink
drains it in turn, as a real process in a consumer group of its own, into the same typed
table: market_conditions with the schema's primary key, checks, indexes and triggers (a
hypertable with --timescaledb), emptied between sinks. For each sink the report gives
- rows/s after start-up: the table is polled; from the first row seen to the last (600,000
  bars by default: `cie consume` drains 200,000 in about two seconds, and polling every
  0.2 s made its figure vary from 31 % to 58 % of the server's COPY between runs);
- a content check against the produced bars: count, sum of close (exact decimal), sum of
  volume, first and last timestamp;
- what it gives: upsert or plain insert, exact decimals or floats, dead letters;
- its ratio to the server's own COPY of the same rows into the same table in the same run
  (``psql \copy`` of pre-rendered COPY text, 10,000 rows a transaction): the database's limit.

Every peer runs with its documented batch settings raised to 10,000 rows (what was tuned is
in the report); `cie consume` runs twice, with its defaults and at CIE_BATCH_MAX_ROWS=10000.
The Debezium JDBC sink needs a schema with every message, which the producers' JSON does not
carry: it reads the same bars re-encoded in Kafka Connect's JSON envelope (schema and payload,
decimals as exact numbers) from a second topic. The machine is shared and noisy: compare the
ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
from aiokafka.admin import AIOKafkaAdminClient

from consumers.contracts.bars import Bar
from consumers.ingest.kafka import client_options, ensure_topics, make_producer
from consumers.platform.settings import Settings, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for ingest_bench
import ingest_bench

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("CIE_STACK_DIR", REPO / ".stack")) / "peers"
TABLE = "market_conditions"
BATCH = 10_000
CONNECT_REST_PORT = 18083


@dataclass(frozen=True)
class Run:
    """What every sink needs to know about this run."""

    settings: Settings
    url: str
    topic: str
    envelope_topic: str
    workdir: Path

    @property
    def db(self) -> dict[str, str]:
        parts = urlsplit(self.url)
        return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port or 5432),
                "dbname": parts.path.lstrip("/"), "user": parts.username or "postgres"}


@dataclass(frozen=True)
class Sink:
    name: str
    gives: str  # upsert or insert, decimals, dead letters
    tuned: str
    start: Callable[[Run, Path], subprocess.Popen[bytes]]


def spawn(command: Sequence[str], log: Path, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def start_cie(batch: int | None) -> Callable[[Run, Path], subprocess.Popen[bytes]]:
    def start(run: Run, log: Path) -> subprocess.Popen[bytes]:
        env = {"KAFKA_BOOTSTRAP_SERVERS": run.settings.kafka_bootstrap_servers,
               "DATABASE_URL": run.url, "CIE_CONSUMER_GROUP": f"peers-{uuid.uuid4().hex[:8]}",
               "CIE_METRICS_PORT": "0", "CIE_LOG_FORMAT": "json", "CIE_TOPIC_BARS": run.topic}
        if batch is not None:
            env["CIE_BATCH_MAX_ROWS"] = str(batch)
        return spawn([sys.executable, "-m", "consumers", "consume"], log, env)
    return start


def start_telegraf(run: Run, log: Path) -> subprocess.Popen[bytes]:
    db = run.db
    connection = " ".join(f"{k}={v}" for k, v in db.items())
    conf = run.workdir / "telegraf.conf"
    conf.write_text(f"""
[agent]
  metric_batch_size = {BATCH}
  metric_buffer_limit = {BATCH * 40}
  flush_interval = "1s"
  flush_jitter = "0s"
  omit_hostname = true

[[inputs.kafka_consumer]]
  brokers = ["{run.settings.kafka_bootstrap_servers}"]
  topics = ["{run.topic}"]
  consumer_group = "peers-telegraf-{uuid.uuid4().hex[:8]}"
  offset = "oldest"
  kafka_version = "3.0.0"
  max_undelivered_messages = {BATCH}
  name_override = "{TABLE}"
  data_format = "json"
  tag_keys = ["symbol"]
  json_string_fields = ["detected_regime"]
  json_time_key = "timestamp"
  json_time_format = "2006-01-02T15:04:05Z07:00"

[[outputs.postgresql]]
  connection = "{connection} sslmode=disable"
  timestamp_column_name = "timestamp"
  timestamp_column_type = "timestamp with time zone"
  add_column_templates = []
""")
    return spawn([str(PEERS / "bin" / "telegraf"), "--config", str(conf)], log)


def start_quix(run: Run, log: Path) -> subprocess.Popen[bytes]:
    db = run.db
    return spawn([str(PEERS / "quix" / "bin" / "python"), str(Path(__file__).with_name(
        "quix_sink.py")), run.settings.kafka_bootstrap_servers, run.topic,
        f"peers-quix-{uuid.uuid4().hex[:8]}", db["host"], db["port"], db["dbname"], db["user"],
        TABLE], log)


def start_debezium(run: Run, log: Path) -> subprocess.Popen[bytes]:
    db = run.db
    worker = run.workdir / "connect-worker.properties"
    worker.write_text("\n".join([
        f"bootstrap.servers={run.settings.kafka_bootstrap_servers}",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable=true",
        f"offset.storage.file.filename={run.workdir / 'connect.offsets'}",
        f"listeners=http://127.0.0.1:{CONNECT_REST_PORT}",
        f"consumer.max.poll.records={BATCH}",
        "plugin.path=", ""]))
    connector = run.workdir / "debezium-jdbc-sink.properties"
    connector.write_text("\n".join([
        f"name=peers-debezium-{uuid.uuid4().hex[:8]}",
        "connector.class=io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max=1",
        f"topics={run.envelope_topic}",
        f"connection.url=jdbc:postgresql://{db['host']}:{db['port']}/{db['dbname']}"
        "?reWriteBatchedInserts=true",
        f"connection.username={db['user']}",
        "connection.password=",
        "insert.mode=upsert",
        "primary.key.mode=record_value",
        "primary.key.fields=symbol,timestamp",
        "schema.evolution=none",
        f"collection.name.format={TABLE}",
        f"batch.size={BATCH}",
        "errors.tolerance=none", ""]))
    logging = Path(__file__).with_name("connect") / "log4j2.properties"
    return spawn(["java", "-Xms128m", "-Xmx512m", "-Djava.awt.headless=true",
                  f"-Dlog4j2.configurationFile={logging}",
                  "-cp", f"{PEERS / 'connect' / 'libs'}/*",
                  "org.apache.kafka.connect.cli.ConnectStandalone", str(worker),
                  str(connector)], log)


CIE_GIVES = ("upsert on (symbol, timestamp); exact decimals (validated text into COPY); "
             "invalid messages to a dead-letter topic with the reason")
SINKS = {
    "cie": Sink("cie consume (defaults)", CIE_GIVES, "nothing", start_cie(None)),
    "cie-10000": Sink("cie consume", CIE_GIVES, f"CIE_BATCH_MAX_ROWS={BATCH}",
                      start_cie(BATCH)),
    "telegraf": Sink(
        "Telegraf 1.37 kafka_consumer -> outputs.postgresql",
        "plain COPY, no upsert (a redelivered batch fails on the primary key and is retried "
        "forever); JSON numbers as float64; an unparsable message is logged and dropped",
        f"metric_batch_size={BATCH}, max_undelivered_messages={BATCH}, flush_interval=1s",
        start_telegraf),
    "quix": Sink(
        "Quix Streams 3.28 PostgreSQLSink",
        "upsert on (symbol, timestamp) (INSERT ... VALUES, ON CONFLICT); JSON numbers as "
        "float; no dead letters (a bad message stops the application)",
        f"commit_every={BATCH}, commit_interval=1s", start_quix),
    "debezium": Sink(
        "Debezium 3.5 JDBC sink on Kafka Connect 4.1 standalone",
        "upsert on (symbol, timestamp) (batched JDBC statements); exact decimals, but only "
        "with a schema in every message (Connect JSON envelope: 10x the bytes); dead letters "
        "configurable (errors.tolerance, off here)",
        f"batch.size={BATCH}, consumer.max.poll.records={BATCH}, the JDBC driver's "
        "reWriteBatchedInserts=true (multi-row statements)", start_debezium),
}

ENVELOPE_DECIMAL = "org.apache.kafka.connect.data.Decimal"


def envelope_schema() -> dict[str, Any]:
    """Kafka Connect's JSON schema for a bar: decimals keep scale and precision."""
    fields: list[dict[str, Any]] = []
    for name in Bar.__struct_fields__:
        optional = name not in {"symbol", "timestamp", "open", "high", "low", "close",
                                "volume"}
        if name in Bar.decimals:
            precision, scale = Bar.decimals[name]
            fields.append({"field": name, "type": "bytes", "optional": optional,
                           "name": ENVELOPE_DECIMAL, "version": 1, "parameters": {
                               "scale": str(scale), "connect.decimal.precision": str(precision)}})
        elif name == "timestamp":
            fields.append({"field": name, "type": "int64", "optional": False,
                           "name": "org.apache.kafka.connect.data.Timestamp", "version": 1})
        elif name == "volume":
            fields.append({"field": name, "type": "int64", "optional": False})
        else:
            fields.append({"field": name, "type": "string", "optional": optional})
    return {"type": "struct", "name": "market_conditions", "optional": False, "fields": fields}


async def produce_envelopes(settings: Settings, bars: Sequence[Bar]) -> str:
    topic = f"peers-bars-envelope-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=ingest_bench.PARTITIONS,
                        replication_factor=1)
    encoder = msgspec.json.Encoder(decimal_format="number")
    schema = envelope_schema()
    # gzip: the schema repeated in every message would otherwise write ten times the bytes
    producer = make_producer(settings, linger_ms=20, max_batch_size=1 << 20,
                             compression_type="gzip")
    await producer.start()
    try:
        futures = []
        for bar in bars:
            payload = msgspec.structs.asdict(bar)
            payload["timestamp"] = int(bar.timestamp.timestamp() * 1000)
            value = encoder.encode({"schema": schema, "payload": payload})
            futures.append(await producer.send(topic, key=bar.symbol.encode(), value=value))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


def expected_content(bars: Sequence[Bar]) -> tuple[Any, ...]:
    return (len(bars), sum((b.close for b in bars), Decimal(0)), sum(b.volume for b in bars),
            min(b.timestamp for b in bars), max(b.timestamp for b in bars))


async def table_content(conn: asyncpg.Connection) -> tuple[Any, ...]:
    row = await conn.fetchrow(f"SELECT count(*), sum(close), sum(volume), min(timestamp), "
                              f"max(timestamp) FROM {TABLE}")
    return tuple(row)


async def drain(run: Run, sink: Sink, n: int, timeout: float) -> tuple[float, tuple[Any, ...]]:
    """Rows per second from the first row seen in the table until all ``n`` are there, and
    the table's content then."""
    await ingest_bench.truncate(run.url)
    log = run.workdir / f"{sink.name.split()[0].lower()}-{time.monotonic_ns()}.log"
    proc = sink.start(run, log)
    conn = await asyncpg.connect(run.url)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
            now = time.perf_counter()
            if count and first is None:
                first = (now, count)
            if count >= n:
                assert first is not None
                seconds, counted = now - first[0], n - first[1]
                rate = counted / seconds if counted else float("nan")
                return rate, await table_content(conn)
            if proc.poll() is not None:
                raise RuntimeError(f"{sink.name} exited ({proc.returncode}); see {log}")
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{sink.name}: {TABLE} did not reach {n} rows in {timeout:.0f} s; "
                           f"see {log}")
    finally:
        await conn.close()
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check(content: tuple[Any, ...], expected: tuple[Any, ...]) -> str:
    names = ("count", "sum(close)", "sum(volume)", "first timestamp", "last timestamp")
    wrong = [f"{name} {got} != {want}" for name, got, want in zip(names, content, expected,
                                                                   strict=True) if got != want]
    return "exact" if not wrong else "; ".join(wrong)


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    name = f"cie_peers_{os.getpid()}"
    url = await ingest_bench.create_database(settings, name, args.timescaledb)
    try:
        await compare(args, settings, url)
    finally:  # a run's database holds 600,000 bars (and, on TimescaleDB, jobs that keep running)
        await ingest_bench.drop_database(settings, name)


async def compare(args: argparse.Namespace, settings: Settings, url: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cie-peers-"))
    bars = ingest_bench.make_bars(args.bars)
    reference = ingest_bench.copy_batches(TABLE, tuple(Bar.__struct_fields__),
                                          [msgspec.structs.astuple(b) for b in bars], BATCH)
    # before the topics are written (the broker's writeback slows the server's commits) and
    # after the sinks; the higher one is the reference
    copies = [ingest_bench.server_copy_limit(url, reference, len(bars), workdir)]
    topic = await ingest_bench.produce(settings, "bars", bars)
    envelope_topic = (await produce_envelopes(settings, bars) if "debezium" in args.sinks
                      else "")
    this = Run(settings, url, topic, envelope_topic, workdir)
    expected = expected_content(bars)
    path = "TimescaleDB hypertable" if args.timescaledb else "plain PostgreSQL"
    print(f"{len(bars):,} bars, {path}; server COPY {copies[0]:,.0f} rows/s", flush=True)
    results: dict[str, tuple[Sink, float, str]] = {}
    for key in args.sinks:
        sink = SINKS[key]
        rate, content = await drain(this, sink, len(bars), args.timeout)
        results[key] = (sink, rate, check(content, expected))
        print(f"{sink.name}: {rate:,.0f} rows/s, content {results[key][2]}", flush=True)
    copies.append(ingest_bench.server_copy_limit(url, reference, len(bars), workdir))
    server = max(copies)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(), "bars": len(bars), "schema_path": path,
        "server_copy_per_s": round(server), "server_copy_runs_per_s": [round(c) for c in copies],
        "sinks": {key: {"name": sink.name, "rows_per_s": round(rate),
                        "ratio_to_server_copy": round(rate / server, 3), "content": verdict,
                        "gives": sink.gives, "tuned": sink.tuned}
                  for key, (sink, rate, verdict) in results.items()}}
    print(markdown(report))
    print(json.dumps(report, indent=2, default=str))
    await delete_topics(settings, [t for t in (topic, f"{topic}.dlq", envelope_topic) if t])
    shutil.rmtree(workdir, ignore_errors=True)


async def delete_topics(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def markdown(report: dict[str, Any]) -> str:
    copies = " and ".join(f"{c:,}" for c in report["server_copy_runs_per_s"])
    lines = [f"{report['bars']:,} bars, {report['schema_path']}, server COPY "
             f"{report['server_copy_per_s']:,} rows/s (before and after: {copies})", "",
             "| sink | rows/s | of server COPY | content | gives | tuned |",
             "|---|---|---|---|---|---|"]
    for sink in report["sinks"].values():
        lines.append(f"| {sink['name']} | {sink['rows_per_s']:,} | "
                     f"{sink['ratio_to_server_copy']:.0%} | {sink['content']} | "
                     f"{sink['gives']} | {sink['tuned']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=600_000)
    parser.add_argument("--sinks", type=lambda s: s.split(","), default=list(SINKS),
                        help=f"any of {', '.join(SINKS)}")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a sink may take to drain the topic")
    parser.add_argument("--timescaledb", action="store_true",
                        help="hypertables (the extension must be installed)")
    args = parser.parse_args()
    unknown = set(args.sinks) - set(SINKS)
    if unknown:
        parser.error(f"unknown sinks {', '.join(sorted(unknown))}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
