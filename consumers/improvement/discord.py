"""A Discord webhook: the message an improvement event becomes, and one POST of it.

Every answer is sorted by what it says about the message, as that decides whether the event
may be posted again (consumers/improvement/notifier.py):

- ``Posted``: Discord created it (``?wait=true`` makes the answer carry the message id).
- ``NotPosted``: Discord did not create it and says when to try again: 429 (its
  ``retry_after``), a 5xx, or a request that never reached it (connection refused).
- ``Refused``: a 4xx other than 429 (a deleted webhook, a message Discord finds invalid): not
  retried until a fix.
- ``InDoubt``: the request went out and no answer came back (a timeout, a connection cut):
  Discord may have created the message.

The webhook URL holds its token: it is never logged, and httpx's own request log is silenced.
Discord's rate limits are honoured before the next request: ``X-RateLimit-Remaining: 0``
waits ``X-RateLimit-Reset-After`` seconds, a 429 waits its ``retry_after``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines name the URL (a secret)

# Discord's limits on an embed (characters); longer text is cut with an ellipsis.
TITLE_LIMIT, FIELD_LIMIT, FIELDS_LIMIT = 256, 1024, 25
EMBED_LIMIT = 6000  # all of an embed's text together
# Green for what improved, red for what went back or stopped, grey otherwise.
GOOD, BAD, NEUTRAL = 0x2ECC71, 0xE74C3C, 0x95A5A6
BAD_WORDS = ("rollback", "reject", "disabled", "fail", "degrad")


@dataclass(frozen=True)
class Posted:
    message_id: str


@dataclass(frozen=True)
class NotPosted:
    error: str
    retry_after: float | None  # seconds Discord asked us to wait (a 429), else our backoff


@dataclass(frozen=True)
class Refused:
    error: str


@dataclass(frozen=True)
class InDoubt:
    error: str


Answer = Posted | NotPosted | Refused | InDoubt


class Webhook:
    """One webhook, one connection pool; requests one at a time, paced by Discord's limits."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._url = httpx.URL(url).copy_merge_params({"wait": "true"})
        self._client = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)
        self._not_before = 0.0  # time.monotonic() of the next request Discord allows

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, payload: dict[str, Any]) -> Answer:
        await asyncio.sleep(max(0.0, self._not_before - time.monotonic()))
        try:
            response = await self._client.post(self._url, json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return NotPosted(f"not sent: {type(exc).__name__}", None)  # never reached Discord
        except httpx.HTTPError as exc:  # sent, no answer: the message may exist
            return InDoubt(f"no answer: {type(exc).__name__}")
        self._pace(response)
        return self._answer(response)

    def _pace(self, response: httpx.Response) -> None:
        wait = 0.0
        if response.headers.get("X-RateLimit-Remaining") == "0":
            wait = _seconds(response.headers.get("X-RateLimit-Reset-After"))
        if response.status_code == 429:
            wait = max(wait, _retry_after(response))
        self._not_before = max(self._not_before, time.monotonic() + wait)

    @staticmethod
    def _answer(response: httpx.Response) -> Answer:
        status = response.status_code
        if 200 <= status < 300:
            message_id = _json(response).get("id")
            if isinstance(message_id, str) and message_id:
                return Posted(message_id)
            return InDoubt(f"HTTP {status} without a message id")  # not Discord's answer
        if status == 429:
            return NotPosted("HTTP 429: rate limited", _retry_after(response))
        if status >= 500:
            return NotPosted(f"HTTP {status}", None)
        body = _json(response)
        return Refused(f"HTTP {status}: {body.get('message', response.reason_phrase)}"
                       + (f" (code {body['code']})" if "code" in body else ""))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float:
    """A 429's wait: the body's ``retry_after`` (seconds, fractional), else the header."""
    seconds = _json(response).get("retry_after")
    if isinstance(seconds, int | float) and seconds >= 0:
        return float(seconds)
    return _seconds(response.headers.get("Retry-After"), default=1.0)


def _seconds(text: str | None, default: float = 0.0) -> float:
    try:
        return max(0.0, float(text)) if text is not None else default
    except ValueError:
        return default


def message(event: dict[str, Any]) -> dict[str, Any]:
    """The webhook payload for one improvement_events row (JSON columns as parsed JSON).

    The footer carries the event id, so a person can search the channel for an event that is
    in doubt. Mentions are disabled: event text never pings anyone."""
    kind = str(event["event_type"])
    fields = [
        _field("Component", f"{event['component_type']} {event['component_id']}"),
        _field("Change", _change(event.get("old_value"), event.get("new_value"))),
    ]
    improved = event.get("improvement_metrics")
    if improved:
        fields.append(_field("Improvement", _compact(improved), inline=False))
    fields.extend(_before_after(event.get("performance_before"), event.get("performance_after")))
    embed: dict[str, Any] = {
        "title": _cut(f"{kind.replace('_', ' ')}: {_subject(event)}", TITLE_LIMIT),
        "color": BAD if any(word in kind for word in BAD_WORDS) else (
            GOOD if improved or "promot" in kind else NEUTRAL),
        "fields": _fit(fields[:FIELDS_LIMIT]),
        "footer": {"text": f"event {event['event_id']}"
                           + ("" if event.get("automated", True) else " · manual")},
    }
    if event.get("trigger_reason"):
        embed["description"] = _cut(str(event["trigger_reason"]), 100)
    if event.get("event_timestamp") is not None:
        embed["timestamp"] = event["event_timestamp"].isoformat()
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def _subject(event: dict[str, Any]) -> str:
    """What the event is about: an A/B test's name (its component_id is the test id)."""
    metrics = event.get("improvement_metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("test"), str):
        return str(metrics["test"])
    return str(event["component_id"])


def _change(old: Any, new: Any) -> str:
    """'v1 → v2' when both sides name a version, else both sides as compact JSON."""
    def side(value: Any) -> str:
        if isinstance(value, dict) and "version" in value:
            return str(value["version"])
        return "-" if value is None else _compact(value)
    return f"{side(old)} → {side(new)}"


# The figures a reader looks for first, when both sides have them (the rollups' names).
HEADLINE = ("win_rate", "sharpe_ratio", "profit_factor", "net_pnl", "trades", "max_drawdown",
            "sortino_ratio", "accuracy")
BEFORE_AFTER_LIMIT = 8


def _before_after(before: Any, after: Any) -> list[dict[str, Any]]:
    """'before → after' for the figures both sides have: the headline ones first, at most
    BEFORE_AFTER_LIMIT."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    shared = [name for name in before
              if name in after and not isinstance(before[name], dict | list)]
    shared.sort(key=lambda name: HEADLINE.index(name) if name in HEADLINE else len(HEADLINE))
    return [_field(name, f"{_compact(before[name])} → {_compact(after[name])}")
            for name in shared[:BEFORE_AFTER_LIMIT]]


def _fit(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first fields whose text stays within the embed's limit, with room for the rest."""
    # the title, and trigger_reason (VARCHAR(100)) and the footer, at most 100 each
    room, kept = EMBED_LIMIT - TITLE_LIMIT - 200, []
    for field in fields:
        room -= len(field["name"]) + len(field["value"])
        if room < 0:
            break
        kept.append(field)
    return kept


def _field(name: str, value: str, *, inline: bool = True) -> dict[str, Any]:
    return {"name": _cut(name, TITLE_LIMIT), "value": _cut(value or "-", FIELD_LIMIT),
            "inline": inline}


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
