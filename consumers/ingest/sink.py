"""Writing a batch of decoded events: one transaction, bad rows isolated by splitting.

``write_batch`` writes a batch as one transaction: the pipeline's fast path for all-new keys
(``write_new``, atomic by itself) if it has one and no key turns out to be stored, otherwise
``pipeline.write`` in a transaction. When PostgreSQL refuses the data
(a constraint, a value out of range), the batch is split in halves and each half is written in
its own transaction, recursively, until the refused rows stand alone; those come back as
rejections and everything else lands. Halves are written in order, so "last write wins" still
follows Kafka order. A batch with one bad row in N costs about 2·log2(N) extra transactions,
not N.

Errors are sorted by ``consumers.platform.faults.classify``: the data's fault → rejection
(dead letter), never retried; transient → ``TransientError``, the caller retries the batch;
fatal → ``FatalError``, the process stops, because retrying or dead-lettering would hide it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from consumers.errors import FatalError, TransientError
from consumers.ingest.pipelines.base import Pipeline, Rejection
from consumers.platform.db import Conn, acquire
from consumers.platform.faults import classify, describe


async def write_batch(
    pool: asyncpg.Pool, pipeline: Pipeline, events: Sequence[Any]
) -> list[Rejection]:
    """Write ``events``; returns the rejected ones (indexes into ``events``)."""
    return await _write_range(pool, pipeline, events, 0, len(events))


async def _write_range(
    pool: asyncpg.Pool, pipeline: Pipeline, events: Sequence[Any], start: int, stop: int
) -> list[Rejection]:
    if start == stop:
        return []
    try:
        async with acquire(pool) as conn:
            rejected = await _write_once(conn, pipeline, events[start:stop])
        return [Rejection(start + r.index, r.error_class, r.reason) for r in rejected]
    except Exception as exc:
        fault = classify(exc)
        if fault == "transient":
            raise TransientError(describe(exc)) from exc
        if fault == "fatal":
            raise FatalError(f"{type(exc).__name__}: {describe(exc)}") from exc
        if stop - start == 1:
            return [Rejection(start, type(exc).__name__, describe(exc))]
    middle = (start + stop) // 2
    left = await _write_range(pool, pipeline, events, start, middle)
    return left + await _write_range(pool, pipeline, events, middle, stop)


async def _write_once(conn: Conn, pipeline: Pipeline, events: Sequence[Any]) -> list[Rejection]:
    try:
        rejected = await pipeline.write_new(conn, events)
    except asyncpg.UniqueViolationError:
        rejected = None  # a key is stored already; the fast path left nothing behind
    if rejected is None:
        async with conn.transaction():
            rejected = await pipeline.write(conn, events)
    return rejected
