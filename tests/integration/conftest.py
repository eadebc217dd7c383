"""Fixtures shared by the integration tests (the services' fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.harness import Ingest, ingest_environment
from tests.support.private_postgres import PrivatePostgres
from tests.support.stack import Stack, Templates, clone, database_url, drop_database


@pytest.fixture
async def ingest(stack: Stack, any_db: str) -> AsyncIterator[Ingest]:
    """`cie consume` running in this process on fresh topics, on each schema path in turn."""
    harness = Ingest(ingest_environment(stack.kafka, any_db))
    await harness.open()
    await harness.start()
    yield harness
    await harness.close()


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own (plain path), for tests that stop and start it."""
    server = PrivatePostgres()
    await server.init()
    await server.start()
    yield server
    await server.destroy()


@pytest.fixture
async def twin_db(stack: Stack, templates: Templates, any_db: str) -> AsyncIterator[str]:
    """A second fresh database on ``any_db``'s schema path, to compare two runs' rows."""
    conn = await asyncpg.connect(any_db)
    try:
        timescale = await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    template = templates.timescale if timescale else templates.plain
    assert template is not None
    name = await clone(stack, template)
    yield database_url(stack.server_url, name)
    await drop_database(stack, name)
