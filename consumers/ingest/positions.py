"""Each partition's position in the database, written in the same transaction as its rows.

Kafka's committed offset follows the rows: a crash (or a lost commit after a rebalance)
between a batch's database commit and its Kafka commit used to make the next owner read the
batch again and write it again, harmlessly but at a cost (the fills ledger re-run, bars
rewritten, compressed chunks touched). Now every transaction that writes a batch's rows also
moves ``ingest_positions`` (group, topic, partition → the first offset not yet written)
past them, so the database knows exactly what it holds:

- the member still starts at Kafka's committed offset, and a record below the database's
  position is skipped, not written again (``cie_replayed_messages_skipped_total``). Starting
  at Kafka's offset rather than the database's keeps the dead letters right: they are
  produced in the Kafka transaction that commits the offsets (kafka.py), so after a crash
  between the two the skipped records are decoded again and their dead letters sent then.
  A row the database refused in the lost window is found in ``ingest_rejections``, stored in
  the transaction whose position passed it;
- the position only moves from the value this member last read or wrote (``from_offset``
  must match): a member that lost its partitions without knowing (a zombie) cannot write
  what the new owner already wrote. Its transaction rolls back with ``PositionMoved``, it
  reads the positions again and skips what is written.

The positions are read the first time a partition's batch is written after an assignment,
in the write's retry loop, so an outage at assignment only delays the first write.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from consumers.errors import FatalError, PositionMoved, TransientError
from consumers.ingest.pipelines.base import Rejection
from consumers.platform.db import Conn, acquire, queries
from consumers.platform.faults import classify, describe

# aiokafka.structs.ConsumerRecord: the fields read here are topic, partition and offset
Record = Any


class Positions:
    """What this member knows of its partitions' positions in the database.

    ``None`` means the database holds none for the partition (a first start, or the first
    after the upgrade that added them): then Kafka's committed offset is all there is."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._known: dict[tuple[str, int], int | None] = {}

    def next_offset(self, topic: str, partition: int) -> int | None:
        return self._known[(topic, partition)]

    def forget(self, topic: str, partitions: Iterable[int]) -> None:
        """Read these again before the next write (revoked, or moved by another member)."""
        for partition in partitions:
            self._known.pop((topic, partition), None)

    async def load(self, pool: asyncpg.Pool, topic: str, partitions: Iterable[int]) -> None:
        """Read the positions of ``partitions`` not known yet (one query, none if all are)."""
        missing = sorted({p for p in partitions if (topic, p) not in self._known})
        if not missing:
            return
        async with _reading(pool) as conn:
            rows = await conn.fetch(queries("ingest")["positions_read"], self.group, topic,
                                    missing)
        stored = {row["kafka_partition"]: row["next_offset"] for row in rows}
        for partition in missing:
            self._known[(topic, partition)] = stored.get(partition)

    def behind(self, topic: str, spans: Mapping[int, tuple[int, int]]) -> bool:
        """Whether a batch spanning ``spans`` (partition → lowest and highest offset) starts
        below the position of one of its partitions (all loaded): some of it is written."""
        for partition, (low, _) in spans.items():
            position = self._known[(topic, partition)]
            if position is not None and low < position:
                return True
        return False

    def unwritten(self, records: Sequence[Record]) -> tuple[list[int], list[int]]:
        """Indexes of ``records`` at or past their partition's position (to write) and below
        it (written before: skipped). Every partition must be loaded."""
        keep: list[int] = []
        skip: list[int] = []
        for index, record in enumerate(records):
            position = self._known[(record.topic, record.partition)]
            (keep if position is None or record.offset >= position else skip).append(index)
        return keep, skip

    def advanced(self, topic: str, moves: Mapping[int, int]) -> None:
        """A transaction that moved these committed."""
        for partition, next_offset in moves.items():
            self._known[(topic, partition)] = next_offset


async def stored_rejections(
    pool: asyncpg.Pool, group: str, records: Sequence[Record]
) -> dict[tuple[int, int], tuple[str, str]]:
    """(partition, offset) → (error class, reason) of the rows among ``records`` (one
    topic's) that the database refused when they were first written."""
    if not records:
        return {}
    async with _reading(pool) as conn:
        rows = await conn.fetch(
            queries("ingest")["rejections_read"], group, records[0].topic,
            [r.partition for r in records], [r.offset for r in records])
    return {(row["kafka_partition"], row["kafka_offset"]): (row["error_class"], row["reason"])
            for row in rows}


@contextlib.asynccontextmanager
async def _reading(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A pooled connection whose errors are sorted like a batch write's (sink.py): an outage
    is retried with the batch, anything else stops the process."""
    try:
        async with acquire(pool) as conn:
            yield conn
    except Exception as exc:
        if classify(exc) == "transient":
            raise TransientError(describe(exc)) from exc
        raise FatalError(f"reading ingest positions: {describe(exc)}") from exc


@dataclass
class BatchSeal:
    """The position moves of one batch's writes. Each transaction that writes events
    ``[start, stop)`` first calls ``advance`` (which also takes the partitions' position rows:
    a stale writer is refused before it writes anything), then ``store_refused`` with the
    refusals, and ``sealed`` once it committed.

    A transaction moves each partition past the events before ``stop``, so a batch split to
    isolate refused rows (sink.py) seals each piece it commits; the refused rows before
    ``stop`` (``refused``) and the pipeline's own refusals are stored with the move that passes
    them. A refused row after the last committed piece is not: it is read and refused again.
    """

    positions: Positions
    topic: str
    records: Sequence[Record]  # the record of each event being written, in order
    # where the whole batch moves each partition, if the caller knows (its records' spans,
    # dead letters included); else found from ``records``
    whole: Mapping[int, int] | None = None
    _refused: list[Rejection] = field(default_factory=list)  # not stored yet
    _moves: dict[int, int] = field(default_factory=dict)  # of the transaction in progress

    def refused(self, rejection: Rejection) -> None:
        """An event the database refused in a piece of its own (rolled back)."""
        self._refused.append(rejection)

    async def advance(self, conn: Conn, stop: int) -> None:
        moves = self.whole if stop == len(self.records) and self.whole is not None else \
            self._moves_before(stop)
        partitions = sorted(moves)
        expected = [self.positions.next_offset(self.topic, p) for p in partitions]
        moved = await conn.fetch(
            queries("ingest")["positions_advance"], self.positions.group, self.topic,
            partitions, [moves[p] for p in partitions], expected)
        if len(moved) < len(partitions):
            stale = set(partitions) - {row["kafka_partition"] for row in moved}
            self.positions.forget(self.topic, stale)
            raise PositionMoved(
                f"{self.topic} partitions {sorted(stale)}: another member wrote past the "
                "position this one read; reading it again")
        self._moves = dict(moves)

    def _moves_before(self, stop: int) -> dict[int, int]:
        moves: dict[int, int] = {}
        for record in self.records[:stop]:
            moves[record.partition] = max(moves.get(record.partition, 0), record.offset + 1)
        return moves

    async def store_refused(self, conn: Conn, rejected: Sequence[Rejection]) -> None:
        refused = [*self._refused, *rejected]
        if refused:
            await conn.execute(
                queries("ingest")["rejections_store"], self.positions.group, self.topic,
                [self.records[r.index].partition for r in refused],
                [self.records[r.index].offset for r in refused],
                [r.error_class for r in refused], [r.reason for r in refused])

    def sealed(self) -> None:
        """The transaction that advanced committed."""
        self.positions.advanced(self.topic, self._moves)
        self._refused = []
        self._moves = {}
