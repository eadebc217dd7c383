"""Whose fault an error is, and how long to wait before trying again: the one error policy.

Every command sorts the errors it meets with ``classify``:

- ``"message"``: the data's fault. PostgreSQL refused the values (SQLSTATE classes 22 data
  exception, 23 integrity violation, 54 program limit such as an index row too large), or the
  project's own code failed on one message's content (a RecursionError, an OverflowError, a
  bug that only some inputs reach). The batch is split until the message stands alone; it
  becomes a dead letter with the error's class and reason. Never retried.
- ``"transient"``: the infrastructure's fault, going away by itself: connection lost or
  refused, timeouts, server shutting down or starting (57P01-57P03), serialization failure or
  deadlock (40), out of resources (53), I/O errors (58), a lock not available (55P03), and
  ``25006 read_only_sql_transaction`` from a primary demoted during a failover. Retried with
  capped exponential backoff (``Backoff``) while the consumer is paused.
- ``"fatal"``: neither goes away by itself nor is any message's fault: a missing table or
  privilege (42), bad credentials (28), a missing database (3D), a feature the server refuses
  (0A), a client misconfiguration. The process stops with the reason, because retrying or
  dead-lettering would hide it.

Kafka errors follow the client's own ``retriable`` flag.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import asyncpg
from aiokafka.errors import KafkaError

from consumers.errors import CieError, MessageError

Fault = Literal["message", "transient", "fatal"]

# SQLSTATE prefixes, longest match first (a class of two characters or a full code).
_SQLSTATE_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("25006", "transient"),  # read_only_sql_transaction: the primary was demoted (failover)
    ("55P03", "transient"),  # lock_not_available
    ("57014", "transient"),  # query_canceled (statement timeout, pg_cancel_backend)
    ("57P01", "transient"),  # admin_shutdown
    ("57P02", "transient"),  # crash_shutdown
    ("57P03", "transient"),  # cannot_connect_now (starting up, recovering)
    ("08", "transient"),  # connection exception
    ("40", "transient"),  # transaction rollback: serialization failure, deadlock
    ("53", "transient"),  # insufficient resources: disk full, out of memory, too many conns
    ("58", "transient"),  # system error: I/O error
    ("22", "message"),  # data exception: out of range, invalid text, bad encoding
    ("23", "message"),  # integrity constraint violation: check, unique, not null, fk
    ("54", "message"),  # program limit exceeded: a value too large for an index row
)

# Texts of asyncpg's plain InterfaceError raised when the connection went away under it. The
# last one is what the next query on a pooled connection meets after the server closed it
# while it was idle (seen on a PostgreSQL restart): consumers/platform/db.py's ``acquire``
# discards such a connection, so the retry gets a fresh one.
_CONNECTION_GONE = ("connection is closed", "pool is closing", "connection was closed",
                    "another operation is in progress")




def classify(exc: BaseException) -> Fault:
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        for prefix, fault in _SQLSTATE_FAULTS:
            if state.startswith(prefix):
                return fault
        return "fatal"
    if isinstance(exc, asyncpg.exceptions.DataError):
        return "message"  # asyncpg could not encode a value for its column type
    if isinstance(exc, asyncpg.InterfaceError):
        if type(exc) is asyncpg.InterfaceError and any(t in str(exc) for t in _CONNECTION_GONE):
            return "transient"
        return "fatal"  # a misconfigured client
    if isinstance(exc, KafkaError):
        return "transient" if exc.retriable else "fatal"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fatal"  # an untrusted or misnamed server certificate: configuration, not luck
    if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError)):
        return "transient"  # connection refused or reset, a network timeout
    if isinstance(exc, MessageError):
        return "message"
    if isinstance(exc, (CieError, asyncio.CancelledError)):
        return "fatal"  # our own deliberate errors are handled where raised
    # Anything else came out of the project's code while handling the data: the message's.
    return "message"


def describe(exc: BaseException) -> str:
    """One line: the SQLSTATE and constraint where PostgreSQL gave them."""
    if isinstance(exc, asyncpg.PostgresError):
        constraint = getattr(exc, "constraint_name", None)
        suffix = f" (constraint {constraint})" if constraint else ""
        return f"{exc.sqlstate} {exc}{suffix}"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: first, 2·first, 4·first, ... up to ``most`` seconds."""

    first: float
    most: float

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.most)
