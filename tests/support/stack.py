"""The local stack the tests run on (deploy/local/stack.sh), and what they make on it: databases
cloned from migrated templates, topics and S3 buckets of their own. The fixtures (conftest.py)
are thin wrappers around these."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from consumers.platform import migrations

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack.sh"
DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:55432/postgres"


def database_url(server_url: str, dbname: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@dataclass(frozen=True)
class Stack:
    kafka: str
    server_url: str  # the maintenance database; tests never write there
    timescaledb: bool


async def reachable(kafka: str, server_url: str) -> bool:
    try:
        conn = await asyncpg.connect(server_url, timeout=3)
        await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()
    except (TimeoutError, OSError, asyncpg.PostgresError, Exception):
        return False
    return True


async def admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# TimescaleDB's scheduler would run the policies in every test database whenever it liked:
# compress a chunk or drop old rows in the middle of a test, by chance. The jobs stay defined
# (tests check them) but unscheduled; a test that wants one runs it: CALL run_job(id).
UNSCHEDULE_JOBS = """
    SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
    WHERE job_id >= 1000"""  # below 1000: the extension's own jobs (telemetry and such)


async def make_template(stack: Stack, name: str, timescale: bool) -> str:
    await admin_execute(stack.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                         f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(database_url(stack.server_url, name))
    try:
        await migrations.migrate(conn, use_timescaledb=timescale)
        if timescale:
            await conn.execute(UNSCHEDULE_JOBS)
    finally:
        await conn.close()
    # No connections to a template while it is cloned: TimescaleDB's scheduler would hold one.
    await admin_execute(
        stack.server_url,
        f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    return name


@dataclass(frozen=True)
class Templates:
    plain: str
    timescale: str | None


async def clone(stack: Stack, template: str) -> str:
    name = f"cie_test_{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + 30
    while True:  # a just-terminated template backend may linger for a moment
        try:
            await admin_execute(stack.server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            return name
        except asyncpg.ObjectInUseError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def drop_database(stack: Stack, name: str) -> None:
    await admin_execute(stack.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


NewTopics = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class Bucket:
    """A bucket of the test's own on the stack's S3 server (deploy/local/stack.sh: SeaweedFS)."""

    name: str
    environment: dict[str, str]  # the AWS variables a `cie` process needs to reach it

    @property
    def url(self) -> str:
        return f"s3://{self.name}/archive"
