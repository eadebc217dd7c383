"""The upgrade drill: a database on the old line (PostgreSQL 15 with TimescaleDB 2.28.3) is
filled, upgraded to the current line (PostgreSQL 18 with TimescaleDB 2.29.2), checked table by
table, and used. The versions come from deploy/platform.env.

    eval "$(deploy/local/stack.sh env)"   # the stack's Kafka and S3
    .venv/bin/python bench/upgrade_drill.py [--size-mb 1024]
    .venv/bin/python bench/upgrade_drill.py --snapshot DATABASE_URL   (production, before/after)

It needs on this machine the old line's server (``CIE_PG_OLD_BIN``, default Debian's
/usr/lib/postgresql/15/bin) with TimescaleDB 2.28.3, and the stack's PostgreSQL 18
(``CIE_PG_BIN``) with TimescaleDB 2.28.3 *and* 2.29.2: pg_upgrade needs the extension's
version on both sides, and the update then needs the new one (deploy/README.md, "Upgrading").

1. fill (old line): ``cie migrate``; a demo session through Kafka into ``cie consume`` (every
   pipeline, the improvement events included); history in bulk up to ``--size-mb`` (bars,
   predictions, trades and fills over past months, varied values); ``cie validate --once`` and
   ``cie rollup``; TimescaleDB's compression jobs run (compressed chunks); the continuous
   aggregate refreshed; ``cie archive`` of the past months to S3 (archive bookkeeping).
2. snapshot: every table's (and the aggregate's) row count and order-free checksum, the
   compressed chunks, the jobs.
3. ``pg_upgrade --link`` into a new PostgreSQL 18 cluster (initdb without data checksums:
   PostgreSQL 18 turns them on by default and pg_upgrade needs both sides alike).
4. ``ALTER EXTENSION timescaledb UPDATE`` as the first statement of a new session, as
   TimescaleDB requires; then ``cie migrate``.
5. verify: the same snapshot, equal; the extension at the new version.
6. use: another demo session through ``cie consume``, ``cie validate --once``, ``cie rollup``,
   ``cie maintain``: the new rows land, predictions are validated, figures recomputed.
Each step is timed. Everything it made (clusters, topics, S3 objects) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from consumers.demo import run_demo
from consumers.platform.settings import load_settings
from tests.support.cie import S3_VARIABLES, cie_environment
from tests.support.harness import ingest_environment
from tests.support.platform import platform
from tests.support.private_postgres import PrivatePostgres, _as_postgres, pg_bin

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
DATABASE = "cie"
# the row text a checksum is taken of must not depend on the session
FIXED_SETTINGS = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
                  "SET IntervalStyle = 'postgres'; SET extra_float_digits = 1")
SYMBOLS = [f"H{n:03d}" for n in range(40)]  # the bulk history's symbols


def old_bin() -> Path:
    return Path(os.environ.get("CIE_PG_OLD_BIN",
                               f"/usr/lib/postgresql/{platform()['OLD_POSTGRES_MAJOR']}/bin"))


def missing() -> str | None:
    """Why the drill cannot run on this machine, or None."""
    versions = platform()
    old, new = versions["OLD_TIMESCALEDB_VERSION"], versions["TIMESCALEDB_VERSION"]
    wanted = {old_bin(): [old], pg_bin(): [old, new]}
    for bin_dir, timescaledb in wanted.items():
        if not (bin_dir / "pg_config").exists():
            return f"no PostgreSQL in {bin_dir}"
        lib = Path(subprocess.run([str(bin_dir / "pg_config"), "--pkglibdir"], check=True,
                                  capture_output=True, text=True, timeout=30).stdout.strip())
        for version in timescaledb:
            if not (lib / f"timescaledb-{version}.so").exists():
                return f"TimescaleDB {version} is not installed for {bin_dir}"
    return None


@dataclass
class Snapshot:
    tables: dict[str, tuple[int, int]]  # relation -> (rows, checksum)
    compressed_chunks: int
    jobs: list[tuple[str, str]]  # (procedure, hypertable)


@dataclass
class Report:
    size_mb: float = 0
    seconds: dict[str, float] = field(default_factory=dict)
    before: Snapshot | None = None
    after_use: dict[str, int] = field(default_factory=dict)
    extension: str = ""

    def lines(self) -> list[str]:
        assert self.before is not None
        return [
            f"database {self.size_mb:.0f} MB on the old line, "
            f"{self.before.compressed_chunks} compressed chunks, "
            f"{len(self.before.jobs)} TimescaleDB jobs; TimescaleDB now {self.extension}",
            *(f"  {step}: {seconds:.1f} s" for step, seconds in self.seconds.items()),
            *(f"  {table}: {rows} rows, checksum {checksum} (equal after the upgrade)"
              for table, (rows, checksum) in self.before.tables.items()),
            "  after the upgrade, used: " + ", ".join(
                f"{name} {count}" for name, count in self.after_use.items()),
        ]


async def timed(report: Report, step: str, work: Awaitable[T]) -> T:
    started = time.monotonic()
    result = await work
    report.seconds[step] = time.monotonic() - started
    print(f"[drill] {step}: {report.seconds[step]:.1f} s", flush=True)
    return result


# -- the cie commands, as real processes --------------------------------------------------------

def drill_environment(archive_url: str, s3: dict[str, str]) -> dict[str, str]:
    """A consumer's settings with topics and a group of the drill's own (the tests' harness),
    an archive prefix of its own, and the S3 variables; DATABASE_URL is set per cluster."""
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    env = ingest_environment(kafka, "", CIE_ARCHIVE_HORIZON_DAYS="30", **s3)
    env["CIE_ARCHIVE_URL"] = f"{archive_url}-{env['CIE_CONSUMER_GROUP']}"
    return env


async def cie(env: dict[str, str], *args: str, timeout: float = 1800) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", *args, env=cie_environment(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"cie {' '.join(args)} failed ({proc.returncode}): {text[-3000:]}")
    return text


async def ingest_demo(env: dict[str, str], url: str, *, seed: int, minutes: int,
                      symbols: list[str]) -> dict[str, Any]:
    """A demo session of ``symbols`` produced to the drill's topics and consumed by a real
    `cie consume`, until every bar, prediction and fill it sent is in the database (bounded).
    Each session trades symbols of its own, so its rows are told apart from earlier ones."""
    await cie(env, "topics", "ensure", "--partitions", "3")
    consumer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", "consume", env=cie_environment(env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        sent = await run_demo(load_settings(env), minutes=minutes, symbols=symbols, seed=seed)
        wanted = {"market_conditions": sent["Bar"], "model_predictions": sent["Prediction"],
                  "trade_fills": sent["Fill"]}
        deadline = time.monotonic() + 120
        while (landed := await count_rows(url, symbols)) != wanted:
            if time.monotonic() > deadline or consumer.returncode is not None:
                raise RuntimeError(f"cie consume did not land the demo: {landed}, sent {wanted}")
            await asyncio.sleep(0.5)
        return sent
    finally:
        if consumer.returncode is None:
            consumer.send_signal(signal.SIGTERM)
            await asyncio.wait_for(consumer.wait(), 60)


async def count_rows(url: str, symbols: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {table: await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE symbol = ANY($1::text[])", symbols)
                for table in ("market_conditions", "model_predictions", "trade_fills")}
    finally:
        await conn.close()


# -- the old line: filled -----------------------------------------------------------------------

async def bulk_history(url: str, size_mb: int) -> float:
    """Past months of bars, predictions and trades with fills (random values at full
    precision), until the database holds ``size_mb``; returns its size in MB."""
    conn = await asyncpg.connect(url)
    try:
        day = 3  # back from three days ago, a day at a time: hourly bars for the first 75
        # days (months for the archive), then minute bars until the size is reached
        while day < 75 or await conn.fetchval(
                "SELECT pg_database_size(current_database())") < size_mb * 1024 * 1024:
            start = f"date_trunc('day', now()) - interval '{day} days'"
            every = 60 if day < 75 else 1  # minutes between bars
            await conn.execute(f"""
                INSERT INTO market_conditions (symbol, timestamp, open, high, low, close, volume,
                    ema_20, rsi_14, detected_regime)
                SELECT s, {start} + m * interval '1 minute', p, p + r, p - r, p + r / 3,
                       (1000 + random() * 99000)::bigint, p,
                       round((random() * 100)::numeric, 2),
                       (ARRAY['trending_up', 'trending_down', 'ranging', 'volatile'])
                           [1 + (m / 60) % 4]
                FROM unnest($1::text[]) AS s, generate_series(0, 1439, $2) AS m,
                     LATERAL (SELECT round((50 + random() * 450)::numeric, 8) AS p,
                                     round((random() * 2)::numeric, 8) AS r) AS v""",
                SYMBOLS, every)
            await conn.execute(f"""
                INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
                    predicted_at, prediction_horizon_minutes, predicted_direction,
                    confidence_score, feature_vector)
                SELECT gen_random_uuid(), 'v' || (m % 3), 'direction', s,
                       {start} + m * interval '1 minute', (ARRAY[5, 15, 60])[1 + m % 3],
                       (ARRAY['LONG', 'SHORT', 'NEUTRAL'])[1 + (m + length(s)) % 3],
                       round(random()::numeric, 4), jsonb_build_object('rsi', random())
                FROM unnest($1::text[]) AS s, generate_series(0, 1439, 5 * $2) AS m""",
                SYMBOLS, every)
            await conn.execute(f"""
                WITH trades AS (
                    INSERT INTO trade_outcomes (trade_id, strategy_id, model_version, symbol,
                        direction, entry_time, exit_time, entry_price, exit_price, quantity,
                        gross_pnl, net_pnl, commission, slippage, duration_seconds,
                        outcome_type)
                    SELECT gen_random_uuid(), 'strategy-' || (n % 4), 'v' || (n % 3),
                           ($1::text[])[1 + n % 40], 'LONG', at - interval '1 hour', at,
                           p, p + d, 10,
                           d * 10, d * 10 - 2, 2, round((random() / 10)::numeric, 4), 3600,
                           CASE WHEN d * 10 - 2 > 0 THEN 'WIN' WHEN d * 10 - 2 < 0 THEN 'LOSS'
                                ELSE 'BREAKEVEN' END
                    FROM generate_series(0, 399) AS n,
                         LATERAL (SELECT {start} + (n * 3 + 60) * interval '1 minute' AS at,
                                         round((50 + random() * 450)::numeric, 8) AS p,
                                         round(((random() - 0.5) * 4)::numeric, 8) AS d) AS v
                    RETURNING trade_id, strategy_id, model_version, symbol, entry_time,
                              exit_time, entry_price, exit_price)
                INSERT INTO trade_fills (fill_id, trade_id, strategy_id, model_version, symbol,
                    side, quantity, price, filled_at, order_submitted_at)
                SELECT gen_random_uuid(), trade_id, strategy_id, model_version, symbol, f.side,
                       10, f.price, f.at, f.at - interval '40 milliseconds'
                FROM trades, LATERAL (VALUES ('BUY', entry_time, entry_price),
                                             ('SELL', exit_time, exit_price)) AS f(side, at,
                                                                                   price)""",
                SYMBOLS)
            day += 1
        await conn.execute("ANALYZE")
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size / 1024 / 1024
    finally:
        await conn.close()


async def compress_and_refresh(url: str) -> None:
    """What TimescaleDB's scheduler would have done by now: the compression jobs (every chunk
    past its policy's age), and the continuous aggregate over all of it."""
    conn = await asyncpg.connect(url)
    try:
        for job in await conn.fetch("SELECT job_id FROM timescaledb_information.jobs "
                                    "WHERE proc_name = 'policy_compression'"):
            await conn.execute(f"CALL run_job({job['job_id']})")
        for view in await conn.fetch("SELECT view_name FROM "
                                     "timescaledb_information.continuous_aggregates"):
            await conn.execute(f"CALL refresh_continuous_aggregate('{view['view_name']}', "
                               "NULL, NULL)")
    finally:
        await conn.close()


# -- the snapshot: what must survive ------------------------------------------------------------

async def snapshot(url: str) -> Snapshot:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FIXED_SETTINGS)
        timescaledb = await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'timescaledb'")
        relations = sorted(r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"))
        if timescaledb:  # the summary is a continuous aggregate here, a view in public
            relations += sorted(r["view_name"] for r in await conn.fetch(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"))
        tables = {}
        for name in relations:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, coalesce(sum(hashtextextended(t::text, 0)), 0) AS h "
                f'FROM "{name}" AS t')
            tables[name] = (row["n"], int(row["h"]))
        if not timescaledb:
            return Snapshot(tables, 0, [])
        compressed = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed")
        jobs = [(r["proc_name"], r["hypertable_name"] or "") for r in await conn.fetch(
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs "
            "WHERE job_id >= 1000 ORDER BY 1, 2")]
        return Snapshot(tables, compressed, jobs)
    finally:
        await conn.close()


# -- the upgrade --------------------------------------------------------------------------------

async def run_as_postgres(*command: str, cwd: Path, timeout: float = 3600) -> str:
    proc = await asyncio.create_subprocess_exec(
        *_as_postgres(*command), cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({proc.returncode}): {text[-4000:]}")
    return text


BEFORE_PG_UPGRADE = REPO / "deploy" / "upgrade" / "before-pg-upgrade.sql"


async def prepare_old(old: PrivatePostgres) -> None:
    """deploy/upgrade/before-pg-upgrade.sql in every database of the old cluster."""
    conn = await asyncpg.connect(old.url)
    try:
        databases = [r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datallowconn")]
    finally:
        await conn.close()
    for database in databases:
        conn = await asyncpg.connect(old.url.rsplit("/", 1)[0] + f"/{database}")
        try:
            await conn.execute(BEFORE_PG_UPGRADE.read_text())
        finally:
            await conn.close()


async def pg_upgrade(old: PrivatePostgres, new: PrivatePostgres) -> None:
    await prepare_old(old)
    await old.stop()
    await new.stop()
    try:
        await run_as_postgres(
            str(new.bin / "pg_upgrade"), "--old-bindir", str(old.bin), "--new-bindir",
            str(new.bin), "--old-datadir", str(old.data), "--new-datadir", str(new.data),
            "--link", "--username", "postgres", "--socketdir", str(new.root),
            "--old-port", str(old.port), "--new-port", str(new.port), cwd=new.root)
    except RuntimeError as failed:  # its logs go with the cluster: say what they said
        logs = sorted((new.data / "pg_upgrade_output.d").glob("*/log/*.log"))
        tails = "".join(
            f"\n--- {log.name}:\n" + "\n".join(
                line for line in log.read_text(errors="replace").splitlines()
                if "error" in line.lower())[-3000:]
            for log in logs)
        raise RuntimeError(f"{failed}{tails}") from None
    await new.start()


async def update_extension(url: str) -> str:
    """TimescaleDB's update must be the first statement of a session (no TimescaleDB code
    loaded in it yet)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER EXTENSION timescaledb UPDATE")
    finally:
        await conn.close()
    conn = await asyncpg.connect(url)
    try:
        version: str = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        return version
    finally:
        await conn.close()


async def progress(url: str) -> tuple[int, datetime | None]:
    """Predictions validated so far, and when strategy figures were last recomputed."""
    conn = await asyncpg.connect(url)
    try:
        validated: int = await conn.fetchval(
            "SELECT count(*) FROM model_predictions WHERE validated_at IS NOT NULL")
        rolled: datetime | None = await conn.fetchval(
            "SELECT max(updated_at) FROM strategy_performance")
        return validated, rolled
    finally:
        await conn.close()


async def use(env: dict[str, str], url: str, report: Report) -> None:
    """Ingestion, the validator and the rollups on the upgraded database."""
    validated_before, rolled_before = await progress(url)
    sent = await ingest_demo(env, url, seed=11, minutes=90, symbols=["NVDA", "AMZN"])
    await cie(env, "validate", "--once")
    await cie(env, "rollup")
    await cie(env, "maintain")
    validated, rolled = await progress(url)
    if validated <= validated_before:
        raise RuntimeError(f"the validator validated nothing new ({validated})")
    if rolled is None or (rolled_before is not None and rolled <= rolled_before):
        raise RuntimeError("the rollup recomputed no strategy figures")
    report.after_use = {"events ingested": sent["events"],
                        "predictions validated": validated - validated_before}


async def drill(*, size_mb: int, archive_url: str, s3: dict[str, str]) -> Report:
    versions = platform()
    env = drill_environment(archive_url, s3)
    report = Report()
    old = PrivatePostgres(timescaledb=True, bin_dir=old_bin())
    new = PrivatePostgres(timescaledb=True)
    try:
        await old.init()
        await old.start()
        url = await old.create_database(DATABASE)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION timescaledb VERSION "
                               f"'{versions['OLD_TIMESCALEDB_VERSION']}'")
        finally:
            await conn.close()
        env["DATABASE_URL"] = url

        await timed(report, "fill: cie migrate", cie(env, "migrate"))
        await timed(report, "fill: demo session through cie consume",
                    ingest_demo(env, url, seed=7, minutes=90, symbols=["AAPL", "MSFT"]))
        report.size_mb = await timed(report, "fill: bulk history", bulk_history(url, size_mb))
        await timed(report, "fill: cie validate --once", cie(env, "validate", "--once"))
        await timed(report, "fill: cie rollup", cie(env, "rollup"))
        await timed(report, "fill: compression jobs, aggregate refresh",
                    compress_and_refresh(url))
        await timed(report, "fill: cie archive", cie(env, "archive"))
        report.before = await timed(report, "snapshot before", snapshot(url))
        if report.before.compressed_chunks == 0:
            raise RuntimeError("no chunk was compressed: the drill would not cover them")

        await new.init("--no-data-checksums")  # as the old cluster (PostgreSQL 15's default)
        await new.start()
        await timed(report, "pg_upgrade --link", pg_upgrade(old, new))
        url = new.url.rsplit("/", 1)[0] + f"/{DATABASE}"
        env["DATABASE_URL"] = url
        report.extension = await timed(report, "ALTER EXTENSION timescaledb UPDATE",
                                       update_extension(url))
        if report.extension != versions["TIMESCALEDB_VERSION"]:
            raise RuntimeError(f"TimescaleDB is {report.extension} after the update")
        await timed(report, "cie migrate", cie(env, "migrate"))
        after = await timed(report, "snapshot after", snapshot(url))
        if after != report.before:
            differ = {t for t in after.tables.keys() | report.before.tables.keys()
                      if after.tables.get(t) != report.before.tables.get(t)}
            raise RuntimeError(f"the upgrade changed the data: tables {sorted(differ)}, "
                               f"compressed chunks {report.before.compressed_chunks} -> "
                               f"{after.compressed_chunks}, jobs {report.before.jobs} -> "
                               f"{after.jobs}")
        await timed(report, "ingest, validate, roll up, maintain", use(env, url, report))
        return report
    finally:
        for cluster in (new, old):
            await cluster.destroy()
        await _clean_up(env)


async def _clean_up(env: dict[str, str]) -> None:
    """The drill's topics and archive objects."""
    from aiokafka.admin import AIOKafkaAdminClient
    from restore_drill import _remove_prefix

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        names = [env[k] for k in env if k.startswith("CIE_TOPIC_")]
        existing = set(await admin.list_topics())
        doomed = [t for n in names for t in (n, f"{n}.dlq") if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    bucket, _, prefix = env["CIE_ARCHIVE_URL"].removeprefix("s3://").partition("/")
    await _remove_prefix(bucket, prefix + "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--archive-url", default=os.environ.get("CIE_ARCHIVE_URL",
                                                                "s3://cie-archive/archive"))
    parser.add_argument("--snapshot", metavar="DATABASE_URL",
                        help="only print that database's tables (rows, checksum), compressed "
                             "chunks and jobs: before and after a production upgrade")
    args = parser.parse_args()
    if args.snapshot:
        taken = asyncio.run(snapshot(args.snapshot))
        for table, (rows, checksum) in taken.tables.items():
            print(f"{table}\t{rows}\t{checksum}")
        print(f"compressed chunks\t{taken.compressed_chunks}")
        print("jobs\t" + ", ".join(f"{proc} {table}".strip() for proc, table in taken.jobs))
        return
    if reason := missing():
        sys.exit(f"upgrade drill: {reason} (see the docstring)")
    report = asyncio.run(drill(size_mb=args.size_mb, archive_url=args.archive_url, s3={
        name: os.environ[name] for name in S3_VARIABLES if name in os.environ}))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
