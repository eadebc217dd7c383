"""Consumer lag as the broker sees it, on a timer of its own.

For each partition assigned to this member: the partition's end (its last stable offset, as
a read_committed reader sees it) minus the group's committed offset, both asked of the
broker. Not the fetcher's cached high watermark nor this process's own commits, so the
figure stays true while the consume loop waits on a slow flush, and it counts commits made
by any member. Only partitions this member holds are reported, and a partition's series is
removed once it is no longer assigned: summing across pods counts each partition once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumers.ingest.kafka import client_options
from consumers.platform import metrics, periodic
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

LAG_EVERY_SECONDS = 15.0


class LagMonitor:
    def __init__(self, settings: Settings, group: str,
                 assigned: Callable[[], set[TopicPartition]],
                 every: float = LAG_EVERY_SECONDS) -> None:
        self._group = group
        self._assigned = assigned
        self._every = every
        self._admin = AIOKafkaAdminClient(**client_options(settings))
        # Group-less: it only asks for offsets, it never joins the group or fetches.
        self._offsets = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                         isolation_level="read_committed")
        self._reported: set[TopicPartition] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``every`` seconds until ``stop``; a broker that does not answer
        leaves the last figures in place (and is tried again next time)."""
        started = False

        async def step() -> None:
            nonlocal started
            try:
                if not started:
                    await self._admin.start()
                    await self._offsets.start()
                    started = True
                await self.refresh()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.debug("lag.unavailable", error=type(exc).__name__)

        try:
            await periodic.every(self._every, step, stop, name="lag")
        finally:
            self.forget(self._reported)
            await self._offsets.stop()
            await self._admin.close()

    async def refresh(self) -> None:
        partitions = set(self._assigned())
        self.forget(self._reported - partitions)
        self._reported &= partitions
        if not partitions:
            return
        wanted = sorted(partitions)
        ends = await self._offsets.end_offsets(wanted)
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=wanted)
        never = [tp for tp in wanted if committed.get(tp) is None or committed[tp].offset < 0]
        # A partition the group never committed is read from its beginning.
        starts = await self._offsets.beginning_offsets(never) if never else {}
        for tp in wanted:
            position = starts[tp] if tp in starts else committed[tp].offset
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                max(0, ends[tp] - position))
        self._reported |= partitions

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
