"""The backup restore drill: continuous WAL archiving and a base backup of a PostgreSQL cluster
to S3 with barman-cloud (the tools CloudNativePG runs), then a point-in-time restore into a new
cluster, checked table by table against what was there at that time.

    .venv/bin/python bench/restore_drill.py [--size-mb 1024] [--timescaledb]
    (or deploy/local/stack.sh restore-drill; the stack's S3 server and AWS variables are used)

1. A cluster of its own (initdb, a free loopback port) archives every WAL segment to
   ``s3://<bucket>/drill-<id>/`` (``archive_command = barman-cloud-wal-archive ...``).
2. It is filled to ``--size-mb`` (a wide table) plus a small one, and backed up
   (``barman-cloud-backup``): timed.
3. More rows are written, the time is noted (with every table's row count and an order-free
   checksum, the sum of the rows' 64-bit hashes), and more rows are written after it.
4. ``barman-cloud-restore`` fetches the base backup into a new data directory, which starts
   with ``restore_command = barman-cloud-wal-restore ...`` and ``recovery_target_time`` at the
   noted time, replays to it and is promoted: timed.
5. The restored cluster must hold exactly the noted counts and checksums; the drill fails
   otherwise. Everything it made (clusters, objects) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.private_postgres import PrivatePostgres, _as_postgres

# barman-cloud's commands: PostgreSQL's own user runs them (archive_command, and the backup
# reads the data directory), so they live in a virtualenv of Debian's Python that it can
# reach (deploy/local/stack.sh makes it; the project's own may sit under a private home).
VENV_BIN = Path(os.environ.get("CIE_BARMAN_BIN", "/var/tmp/cie-barman/bin"))
PROVIDER = ["--cloud-provider", "aws-s3"]
ROW_BYTES = 256  # a filler row: an id and 248 characters


@dataclass
class Report:
    size_mb: float
    backup_seconds: float
    restore_seconds: float
    tables: dict[str, tuple[int, int]]  # table -> (rows, checksum) at the target time

    def lines(self) -> list[str]:
        return [f"database {self.size_mb:.0f} MB: base backup {self.backup_seconds:.1f} s, "
                f"restore to the noted time {self.restore_seconds:.1f} s",
                *(f"  {table}: {rows} rows, checksum {checksum} (equal)"
                  for table, (rows, checksum) in self.tables.items())]


def _endpoint() -> list[str]:
    url = os.environ.get("AWS_ENDPOINT_URL")
    return ["--endpoint-url", url] if url else []


async def _run(*command: str, as_postgres: bool = False, timeout: float = 3600) -> str:
    argv = _as_postgres(*command) if as_postgres else list(command)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({proc.returncode}): {text[-3000:]}")
    return text


async def snapshot(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Per table: rows and the sum of the rows' 64-bit hashes (independent of order)."""
    found = {}
    for table in ("filler", "trades"):
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, coalesce(sum(hashtextextended(t::text, 0)), 0) AS h "
            f"FROM {table} AS t")
        found[table] = (row["n"], int(row["h"]))
    return found


async def drill(bucket: str, *, size_mb: int, timescaledb: bool = False) -> Report:
    server = f"drill-{uuid.uuid4().hex[:8]}"
    destination = f"s3://{bucket}/backups"
    wal_archive = " ".join([str(VENV_BIN / "barman-cloud-wal-archive"), *PROVIDER, *_endpoint(),
                            destination, server, "%p"])
    source = PrivatePostgres(timescaledb=timescaledb)
    restored: PrivatePostgres | None = None
    try:
        await source.init()
        with (source.data / "postgresql.conf").open("a") as conf:
            conf.write(f"wal_level = replica\narchive_mode = on\n"
                       f"archive_command = '{wal_archive}'\nfull_page_writes = on\n")
        await source.start()
        conn = await asyncpg.connect(source.url)
        try:
            await conn.execute(
                "CREATE TABLE filler (id bigint PRIMARY KEY, body text NOT NULL);"
                "CREATE TABLE trades (id bigserial, net_pnl numeric(18, 4),"
                "                     at timestamptz NOT NULL DEFAULT clock_timestamp(),"
                "                     PRIMARY KEY (id, at))")
            if timescaledb:  # the restore brings the extension's catalog back too
                await conn.execute(
                    "CREATE EXTENSION timescaledb;"
                    "SELECT create_hypertable('trades', by_range('at', INTERVAL '1 hour'))")
            rows = size_mb * 1024 * 1024 // ROW_BYTES
            await conn.execute(
                "INSERT INTO filler SELECT g, rpad(md5(g::text), 248, 'x') "
                "FROM generate_series(1, $1) AS g", rows)
            await conn.execute("INSERT INTO trades (net_pnl) SELECT g / 7.0 "
                               "FROM generate_series(1, 1000) AS g")
            size = await conn.fetchval("SELECT pg_database_size(current_database())")

            started = time.monotonic()
            await _run(str(VENV_BIN / "barman-cloud-backup"), *PROVIDER, *_endpoint(),
                       "--immediate-checkpoint", "--gzip",
                       "--host", "127.0.0.1", "--port", str(source.port), "--user", "postgres",
                       destination, server, as_postgres=True)
            backup_seconds = time.monotonic() - started

            await conn.execute("INSERT INTO trades (net_pnl) SELECT -g / 3.0 "
                               "FROM generate_series(1, 500) AS g")
            await conn.execute("UPDATE filler SET body = upper(body) WHERE id % 1000 = 0")
            await asyncio.sleep(1.1)
            target: datetime = await conn.fetchval("SELECT clock_timestamp()")
            expected = await snapshot(conn)
            await asyncio.sleep(1.1)
            await conn.execute("INSERT INTO trades (net_pnl) SELECT 99 "
                               "FROM generate_series(1, 300)")  # after the target: not restored
            await conn.execute("DELETE FROM filler WHERE id % 7 = 0")
            last = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
            deadline = time.monotonic() + 120
            while (await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
                   or "") < last:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"WAL {last} not archived within 120 s")
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

        listing = json.loads(await _run(
            str(VENV_BIN / "barman-cloud-backup-list"), *PROVIDER, *_endpoint(),
            "--format", "json", destination, server))
        [backup] = listing["backups_list"]
        restored = PrivatePostgres(timescaledb=timescaledb)
        if os.getuid() == 0:
            shutil.chown(restored.root, "postgres")
        started = time.monotonic()
        await _run(str(VENV_BIN / "barman-cloud-restore"), *PROVIDER, *_endpoint(),
                   destination, server, backup["backup_id"], str(restored.data),
                   as_postgres=True)
        wal_restore = " ".join([str(VENV_BIN / "barman-cloud-wal-restore"), *PROVIDER,
                                *_endpoint(), destination, server, "%f", "%p"])
        with (restored.data / "postgresql.conf").open("a") as conf:
            conf.write(f"archive_mode = off\nunix_socket_directories = '{restored.root}'\n"
                       f"restore_command = '{wal_restore}'\n"
                       f"recovery_target_time = '{target.isoformat()}'\n"
                       "recovery_target_action = 'promote'\n")
        (restored.data / "recovery.signal").touch()
        if os.getuid() == 0:
            shutil.chown(restored.data / "recovery.signal", "postgres")
        await restored.start()
        conn = await asyncpg.connect(restored.url)
        try:
            deadline = time.monotonic() + 600
            while await conn.fetchval("SELECT pg_is_in_recovery()"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the restored cluster did not finish recovery")
                await asyncio.sleep(0.2)
            restore_seconds = time.monotonic() - started
            found = await snapshot(conn)
        finally:
            await conn.close()
        if found != expected:
            raise RuntimeError(f"restored {found}, expected {expected} at {target}")
        return Report(size / 1024 / 1024, backup_seconds, restore_seconds, found)
    finally:
        if os.environ.get("CIE_DRILL_DEBUG"):
            print((source.root / "postgres.log").read_text(errors="replace")[-4000:])
        for cluster in (source, restored):
            if cluster is not None:
                await cluster.destroy()
        await _remove_prefix(bucket, f"backups/{server}/")


async def _remove_prefix(bucket: str, prefix: str) -> None:
    import boto3
    from botocore.config import Config

    def remove() -> None:
        client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
    await asyncio.to_thread(remove)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--timescaledb", action="store_true")
    parser.add_argument("--bucket", default="cie-archive")
    args = parser.parse_args()
    report = asyncio.run(drill(args.bucket, size_mb=args.size_mb, timescaledb=args.timescaledb))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
