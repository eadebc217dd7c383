"""`cie notify`: improvement events posted to a Discord webhook, an outbox over
improvement_events (rows with ``discord_notified`` false).

Each pass leases a batch of events (SKIP LOCKED, so notifiers side by side take different
ones), then for each event: mark it "posting" and commit, POST it, record Discord's message id
(``discord_notified``, ``notification_message_id``). What is guaranteed:

- **At most once.** An event is posted only after its posting mark is committed, and the mark
  is cleared only when Discord's answer says no message was created (429, 5xx, 4xx, the
  connection refused). An event whose POST went out with no answer, or whose process died
  between the POST and the record, keeps its mark: it is "in doubt", counted in
  cie_notification_outbox_events{state="in_doubt"} and listed by `cie notify --status`, and
  is posted again only after an operator looked at the channel (the footer names the event
  id) and ran `cie notify --release EVENT_ID`. Discord's webhooks take no idempotency key, so
  this is the one choice between a possible duplicate and a possible gap; a duplicate
  trading alert sent by a robot is the worse of the two here.
- **Nothing lost silently.** Every event not posted is either waiting (a retry after Discord's
  ``retry_after`` or our backoff), refused (a 4xx: logged with Discord's reason, counted, and
  retried when a notifier restarts, as a fix — a new webhook, a new version — does), or in
  doubt.

A lease rather than a transaction held open across the POST: a rate limit may make a post wait
for minutes, and a rolled-back transaction cannot remember that a POST went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog

from consumers.errors import FatalError
from consumers.improvement.discord import InDoubt, NotPosted, Posted, Refused, Webhook, message
from consumers.platform import metrics, periodic
from consumers.platform.db import queries
from consumers.platform.faults import Backoff, classify, describe
from consumers.platform.settings import Settings

log = structlog.get_logger(__name__)

JSON_COLUMNS = ("old_value", "new_value", "performance_before", "performance_after",
                "improvement_metrics")


@dataclass(frozen=True)
class NotifierSettings:
    batch: int  # events leased per pass
    lease_seconds: int  # how long a leased event is this notifier's
    max_age_hours: int  # events recorded longer ago are not posted
    retry_base_seconds: float  # first retry after a 5xx, doubled per attempt
    retry_max_seconds: float  # ... up to this

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierSettings:
        return cls(settings.notify_batch, settings.notify_lease_seconds,
                   settings.notify_max_age_hours, settings.notify_retry_base_seconds,
                   settings.notify_retry_max_seconds)


class Notifier:
    """Passes every ``every`` seconds until ``stop`` (at once after a full batch)."""

    def __init__(self, pool: asyncpg.Pool, webhook: Webhook, rules: NotifierSettings,
                 backoff: Backoff) -> None:
        self._pool, self._webhook, self._rules, self._backoff = pool, webhook, rules, backoff
        self.owner = uuid.uuid4()  # this process's leases
        self.progressed_at = time.monotonic()  # /healthz: the loop still turns
        self.outbox: dict[str, int] = {}  # events not notified, by state, after the last pass

    async def run(self, every: float, stop: asyncio.Event) -> None:
        await self._execute("retry_refused")

        async def step() -> bool:  # a full batch leased: more are waiting, go on at once
            leased = await self._step()
            self.progressed_at = time.monotonic()
            return leased >= self._rules.batch

        try:
            await periodic.every(every, step, stop, name="notifier")
        finally:
            with contextlib.suppress(Exception):  # best effort: leases also run out
                await self._execute("release_lease", self.owner)

    async def drain(self, every: float) -> Counter[str]:
        """`cie notify --once`: passes until nothing is pending (waiting out Discord's rate
        limits and our retries), for at most the lease's length."""
        await self._execute("retry_refused")
        total: Counter[str] = Counter()
        deadline = time.monotonic() + self._rules.lease_seconds
        while True:
            outcomes = await self.notify_once()
            total.update(outcomes)
            if self.outbox.get("pending", 0) == 0 or time.monotonic() >= deadline:
                return total
            if not outcomes:
                await asyncio.sleep(every)

    async def _step(self) -> int:
        try:
            outcomes = await self.notify_once()
        except Exception as exc:
            if classify(exc) == "fatal":
                raise FatalError(f"notifier: {describe(exc)}") from exc
            log.warning("notify.failed", error=describe(exc))
            return 0
        metrics.NOTIFIER_LAST_PASS.set(time.time())
        return sum(outcomes.values())

    async def notify_once(self) -> Counter[str]:
        """One pass: lease, post each, export the outbox's state. The outcome of each event
        leased (posted, retry, refused, in_doubt, lost_lease, deferred)."""
        events = await self._fetch("lease", self._rules.batch, self.owner,
                                   self._rules.lease_seconds, self._rules.max_age_hours)
        outcomes: Counter[str] = Counter()
        for index, event in enumerate(events):
            outcome = await self._post(event)
            outcomes[outcome] += 1
            if outcome == "retry":  # Discord is limiting or failing: the rest waits too
                await self._execute("release_lease", self.owner)
                if rest := len(events) - index - 1:
                    outcomes["deferred"] += rest
                break
        for outcome, count in outcomes.items():
            metrics.NOTIFICATIONS.labels(outcome).inc(count)
        await self._export_outbox()
        return outcomes

    async def _post(self, row: asyncpg.Record) -> str:
        event = {**row, **{name: _json(row[name]) for name in JSON_COLUMNS}}
        ids = {"event_id": str(row["event_id"]), "event_type": row["event_type"]}
        attempts = await self._fetchval("mark_posting", row["id"], self.owner)
        if attempts is None:
            log.info("notify.lease_lost", **ids)
            return "lost_lease"
        answer = await self._webhook.post(message(event))
        if isinstance(answer, Posted):
            return await self._record_posted(row["id"], answer.message_id, ids)
        if isinstance(answer, NotPosted):
            wait = (answer.retry_after if answer.retry_after is not None else
                    min(self._rules.retry_base_seconds * 2 ** (attempts - 1),
                        self._rules.retry_max_seconds))
            await self._execute("record_not_posted", row["id"], self.owner, wait, answer.error)
            log.warning("notify.retry", **ids, error=answer.error, retry_in_seconds=wait,
                        attempts=attempts)
            return "retry"
        if isinstance(answer, Refused):
            await self._execute("record_not_posted", row["id"], self.owner, None, answer.error)
            log.error("notify.refused", **ids, error=answer.error,
                      hint="fix the webhook or the event, then restart the notifier")
            return "refused"
        assert isinstance(answer, InDoubt)
        await self._execute("record_in_doubt", row["id"], self.owner, answer.error)
        log.error("notify.in_doubt", **ids, error=answer.error,
                  hint="check the channel for this event id, then: cie notify --release")
        return "in_doubt"

    async def _record_posted(self, row_id: int, message_id: str, ids: dict[str, str]) -> str:
        """Discord created the message: record it, retrying a database that is away (this
        process alone knows the message id). Given up, the event stays in doubt."""
        delays = self._backoff.delays()
        deadline = time.monotonic() + self._rules.lease_seconds
        while True:
            try:
                await self._execute("record_posted", row_id, self.owner, message_id)
                log.info("notify.posted", **ids, message_id=message_id)
                return "posted"
            except Exception as exc:
                if classify(exc) != "transient" or time.monotonic() > deadline:
                    log.error("notify.unrecorded", **ids, message_id=message_id,
                              error=describe(exc))
                    return "in_doubt"
                log.warning("database.retry", error=describe(exc))
                await asyncio.sleep(next(delays))

    async def _export_outbox(self) -> None:
        row = await self._fetchrow("outbox_state", self._rules.max_age_hours)
        self.outbox = dict(row)
        for state, count in self.outbox.items():
            metrics.NOTIFY_OUTBOX.labels(state).set(count)

    async def _execute(self, name: str, *args: Any) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(queries("notifier")[name], *args)

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(queries("notifier")[name], *args))

    async def _fetchrow(self, name: str, *args: Any) -> asyncpg.Record:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(queries("notifier")[name], *args)
        assert row is not None
        return row

    async def _fetchval(self, name: str, *args: Any) -> Any:
        async with self._pool.acquire() as conn:
            return await conn.fetchval(queries("notifier")[name], *args)


def _json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)
