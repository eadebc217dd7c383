"""Writing a batch of decoded events: one transaction, bad rows isolated by splitting.

``write_batch`` writes a batch as one transaction: the pipeline's fast path for all-new keys
(``write_new``) if it has one and no key turns out to be stored, otherwise ``pipeline.write``
in a fresh transaction. The same transaction moves the batch's partitions' positions past its
rows (``seal``, positions.py). When PostgreSQL refuses the data
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

from consumers.errors import FatalError, PositionMoved, TransientError
from consumers.ingest.pipelines.base import Pipeline, Rejection
from consumers.ingest.positions import BatchSeal
from consumers.platform.db import Conn, acquire
from consumers.platform.faults import classify, describe


async def write_batch(
    pool: asyncpg.Pool, pipeline: Pipeline, events: Sequence[Any],
    seal: BatchSeal | None = None,
) -> list[Rejection]:
    """Write ``events``; returns the rejected ones (indexes into ``events``). With ``seal``
    every transaction also moves the events' partitions' positions past what it wrote."""
    return await _write_range(pool, pipeline, events, 0, len(events), seal)


async def _write_range(
    pool: asyncpg.Pool, pipeline: Pipeline, events: Sequence[Any], start: int, stop: int,
    seal: BatchSeal | None,
) -> list[Rejection]:
    if start == stop:
        return []
    try:
        async with acquire(pool) as conn:
            rejected = await _write_once(conn, pipeline, events, start, stop, seal)
        if seal:
            seal.sealed()
        return rejected
    except PositionMoved:
        raise  # another member wrote these partitions (positions.py): the caller reads again
    except Exception as exc:
        fault = classify(exc)
        if fault == "transient":
            raise TransientError(describe(exc)) from exc
        if fault == "fatal":
            raise FatalError(f"{type(exc).__name__}: {describe(exc)}") from exc
        if stop - start == 1:
            rejection = Rejection(start, type(exc).__name__, describe(exc))
            if seal:
                seal.refused(rejection)
            return [rejection]
    middle = (start + stop) // 2
    left = await _write_range(pool, pipeline, events, start, middle, seal)
    return left + await _write_range(pool, pipeline, events, middle, stop, seal)


async def _write_once(
    conn: Conn, pipeline: Pipeline, events: Sequence[Any], start: int, stop: int,
    seal: BatchSeal | None,
) -> list[Rejection]:
    """Write ``events[start:stop]`` and seal them in one transaction; the rejections'
    indexes are into ``events``."""
    piece = events[start:stop]
    fast = True
    try:
        async with conn.transaction():
            if seal:
                await seal.advance(conn, stop)
            rejected = await pipeline.write_new(conn, piece)
            if rejected is None:  # no fast path for this batch: the careful one, right here
                fast = False
                rejected = await pipeline.write(conn, piece)
            return await _refused(conn, rejected, start, seal)
    except asyncpg.UniqueViolationError:
        if not fast:
            raise
    # a key is stored already: the fast path's transaction left nothing behind
    async with conn.transaction():
        if seal:
            await seal.advance(conn, stop)
        return await _refused(conn, await pipeline.write(conn, piece), start, seal)


async def _refused(conn: Conn, rejected: Sequence[Rejection], start: int,
                   seal: BatchSeal | None) -> list[Rejection]:
    """The pipeline's refusals, indexed into the whole batch, stored with the seal's move."""
    rejected = [Rejection(start + r.index, r.error_class, r.reason) for r in rejected]
    if seal:
        await seal.store_refused(conn, rejected)
    return rejected
