"""Fixtures on real services: the local Kafka broker, PostgreSQL and S3 from deploy/local/stack.sh
(their helpers: tests/support/stack.py).

The stack is reused when it answers (KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, or the stack's
defaults) and started otherwise. Every test gets its own database, cloned from a migrated
template (one per schema path: plain PostgreSQL, and TimescaleDB where the extension exists),
and its own uniquely named topics.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import settings as hypothesis_settings

from consumers.platform import migrations
from tests.support.cie import S3_VARIABLES
from tests.support.stack import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA,
    STACK,
    Bucket,
    NewTopics,
    Stack,
    Templates,
    admin_execute,
    clone,
    database_url,
    drop_database,
    make_template,
    reachable,
)

TOOLS_TIMEOUT_SECONDS = 1800  # SeaweedFS alone takes about 6 minutes of two idle cores

# Property tests: reproducible in CI (the same examples every run); HYPOTHESIS_PROFILE=random
# explores new ones (a nightly-style run), and prints the seed of any failure to replay it.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("random", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture(autouse=True)
async def no_task_outlives_its_test() -> AsyncIterator[None]:
    """All tests share one event loop: a task a failed test left running (a consumer, a
    producer's sender) would keep working during later tests. Cancel whatever this test
    started and did not finish."""
    before = asyncio.all_tasks()
    yield
    leftovers = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


@pytest.fixture(scope="session")
async def stack() -> Stack:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA)
    server_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    if not await reachable(kafka, server_url):
        proc = await asyncio.create_subprocess_exec(str(STACK), "up")
        await asyncio.wait_for(proc.wait(), timeout=900)
        assert proc.returncode == 0, "deploy/local/stack.sh up failed"
    conn = await asyncpg.connect(server_url)
    try:
        timescale = await migrations.timescaledb_usable(conn)
    finally:
        await conn.close()
    return Stack(kafka=kafka, server_url=server_url, timescaledb=timescale)


@pytest.fixture(scope="session")
async def templates(stack: Stack) -> AsyncIterator[Templates]:
    suffix = os.getpid()
    plain = await make_template(stack, f"cie_tpl_plain_{suffix}", timescale=False)
    timescale = (
        await make_template(stack, f"cie_tpl_ts_{suffix}", timescale=True)
        if stack.timescaledb else None
    )
    yield Templates(plain=plain, timescale=timescale)
    for name in (plain, timescale):
        if name:
            await drop_database(stack, name)


@pytest.fixture
async def plain_db(stack: Stack, templates: Templates) -> AsyncIterator[str]:
    """DATABASE_URL of a fresh, migrated database on the plain-PostgreSQL path."""
    name = await clone(stack, templates.plain)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


@pytest.fixture
async def timescale_db(stack: Stack, templates: Templates) -> AsyncIterator[str]:
    """DATABASE_URL of a fresh, migrated database on the TimescaleDB path (skips without it)."""
    if templates.timescale is None:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path not tested")
    name = await clone(stack, templates.timescale)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


async def _clone_for(request: pytest.FixtureRequest, stack: Stack,
                     templates: Templates) -> str:
    if request.param == "plain":
        return await clone(stack, templates.plain)
    if templates.timescale is None:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path not tested")
    return await clone(stack, templates.timescale)


@pytest.fixture(params=["plain", "timescaledb"])
async def any_db(request: pytest.FixtureRequest, stack: Stack, templates: Templates) -> AsyncIterator[str]:
    """A fresh migrated database on each schema path in turn."""
    name = await _clone_for(request, stack, templates)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


@pytest.fixture(scope="module", params=["plain", "timescaledb"])
async def module_db(request: pytest.FixtureRequest, stack: Stack, templates: Templates) -> AsyncIterator[str]:
    """Like any_db, shared by one module's tests (which must leave no trace: roll back)."""
    name = await _clone_for(request, stack, templates)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


@pytest.fixture
async def module_conn(module_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the module's database inside a transaction that is rolled back."""
    conn = await asyncpg.connect(module_db)
    transaction = conn.transaction()
    await transaction.start()
    yield conn
    await transaction.rollback()
    await conn.close()


@pytest.fixture
async def empty_db(stack: Stack) -> AsyncIterator[str]:
    """DATABASE_URL of a brand-new database with no schema at all."""
    name = f"cie_empty_{uuid.uuid4().hex[:12]}"
    await admin_execute(stack.server_url, f'CREATE DATABASE "{name}"')
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)


@pytest.fixture
async def conn(plain_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain_db, server_settings={"timezone": "UTC"})
    yield connection
    await connection.close()


@pytest.fixture
async def new_topic(stack: Stack) -> AsyncIterator[NewTopics]:
    """Factory: create a uniquely named topic (default 3 partitions) and return its name."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka)
    await admin.start()
    created: list[str] = []

    async def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    if created:
        await admin.delete_topics(created)
    await admin.close()


@pytest.fixture(scope="session")
def background_tools() -> None:
    """On a first run, `stack.sh test` builds what only some tests need (S3, kustomize, the
    CRDs, barman-cloud) in the background while the suite runs; the tests that use this fixture
    run last (pytest_collection_modifyitems) and wait here until it is done."""
    status = os.environ.get("CIE_TOOLS_STATUS")
    if not status:
        return  # a stack started by hand (`stack.sh up`) has them already
    deadline = time.monotonic() + TOOLS_TIMEOUT_SECONDS
    while not Path(status).exists():
        assert time.monotonic() < deadline, (
            f"the background setup took over {TOOLS_TIMEOUT_SECONDS} s; see "
            f"{os.environ.get('CIE_TOOLS_LOG')}")
        time.sleep(1)
    code = Path(status).read_text().strip()
    assert code == "0", f"the background setup failed ({code}); see {os.environ.get('CIE_TOOLS_LOG')}"


@pytest.fixture
async def bucket(background_tools: None) -> AsyncIterator[Bucket]:
    """A new bucket, emptied and deleted after the test: nothing is left behind."""
    import boto3
    from botocore.config import Config

    missing = [name for name in S3_VARIABLES if not os.environ.get(name)]
    assert not missing, f"{', '.join(missing)} not set: eval \"$({STACK} env)\" (S3 server)"
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    name = f"cie-test-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(client.create_bucket, Bucket=name)
    yield Bucket(name, {variable: os.environ[variable] for variable in S3_VARIABLES})

    def empty_and_delete() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        # a test may turn versioning on: the old versions go too
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        client.delete_bucket(Bucket=name)
    await asyncio.to_thread(empty_and_delete)


def _on_timescaledb_path(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return ("timescale_db" in getattr(item, "fixturenames", ())
            or "timescaledb" in (str(value) for value in params.values()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that runs on the TimescaleDB path carries the ``timescaledb`` marker, so
    ``pytest -m timescaledb`` selects that whole half (and ``-m 'not timescaledb'`` the rest).
    The tests that need the background setup (``background_tools``) run last."""
    for item in items:
        if _on_timescaledb_path(item):
            item.add_marker(pytest.mark.timescaledb)
    items.sort(key=lambda item: "background_tools" in getattr(item, "fixturenames", ()))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line on the TimescaleDB half: how many of its tests ran, and loudly when it was
    skipped (the extension is not installed in this PostgreSQL)."""
    counts = {outcome: sum(1 for report in terminalreporter.stats.get(outcome, [])
                           if "timescaledb" in getattr(report, "keywords", ())  # not collection
                           and report.when in ("call", "setup")
                           and (outcome != "passed" or report.when == "call"))
              for outcome in ("passed", "failed", "error", "skipped")}
    if not any(counts.values()):
        return
    line = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    if counts["skipped"] and not counts["passed"]:
        terminalreporter.write_line(
            f"TimescaleDB half of the suite SKIPPED ({line}): the extension is not installed "
            "in this PostgreSQL, so the production path was not tested", red=True, bold=True)
    else:
        terminalreporter.write_line(f"TimescaleDB path: {line}")
