"""Ports for the servers a test starts itself (PostgreSQL clusters, brokers, `cie` processes).

A port the kernel hands out as free stays free only until someone binds it: between picking it
and the server's own bind, another process (a parallel test, a broker's client socket) may take
it. So a server started on a picked port goes through ``on_free_port``: pick, start, and when
the server says the port was taken, pick another.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 5


class PortTaken(Exception):
    """The server could not bind the port it was given."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def log_text(log: Path, offset: int = 0) -> str:
    """What a server wrote to its log after ``offset`` (its size before this start)."""
    return log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""


def taken(log_text: str) -> bool:
    """Whether a server's log says its bind failed (PostgreSQL, Java and asyncio wordings)."""
    return "address already in use" in log_text.lower()


async def on_free_port(start: Callable[[int], Awaitable[T]]) -> T:
    """``start(port)`` on a fresh free port, again on another while it raises PortTaken."""
    for attempt in range(ATTEMPTS):
        try:
            return await start(free_port())
        except PortTaken:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def on_free_port_sync(start: Callable[[int], T]) -> T:
    """``on_free_port`` for a fixture that starts its servers synchronously."""
    for attempt in range(ATTEMPTS):
        try:
            return start(free_port())
        except PortTaken:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
