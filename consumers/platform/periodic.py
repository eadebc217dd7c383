"""The one "do this every N seconds until stopped" loop of the long-running commands.

A step that fails is logged and tried again at the next period when the failure is transient
or a message's (faults.classify), and stops the process when it is fatal (a missing table or
privilege): retrying that would only hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from consumers.errors import FatalError
from consumers.platform.faults import classify, describe

log = structlog.get_logger(__name__)

# What a step returns: True when work is left over (the next step runs at once, no wait).
Step = Callable[[], Awaitable[bool | None]]


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, less if ``stop`` is set first; whether it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def every(seconds: float, step: Step, stop: asyncio.Event, *, name: str,
                wait_first: bool = False) -> None:
    """Run ``step`` every ``seconds`` until ``stop`` is set (after waiting once if
    ``wait_first``). A failure is logged as ``<name>.failed`` and the step runs again at the
    next period; a fatal one raises FatalError."""
    if wait_first and await stopped_within(stop, seconds):
        return
    while not stop.is_set():
        more = False
        try:
            more = bool(await step())
        except Exception as exc:
            if classify(exc) == "fatal":
                raise FatalError(f"{name}: {describe(exc)}") from exc
            log.warning(f"{name}.failed", error=describe(exc))
        if not more and await stopped_within(stop, seconds):
            return
