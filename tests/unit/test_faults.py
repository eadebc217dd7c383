"""The one error policy: whose fault an error is decides retry, dead letter or stop."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from consumers.errors import SettingsError
from consumers.platform.faults import Backoff, classify
from consumers.platform.settings import load_settings

_BY_SQLSTATE = {
    cls.sqlstate: cls
    for cls in vars(asyncpg.exceptions).values()
    if isinstance(cls, type) and issubclass(cls, asyncpg.PostgresError)
    and getattr(cls, "sqlstate", None)
}


@pytest.mark.parametrize(("sqlstate", "fault"), [
    ("08006", "transient"),  # connection failure
    ("08003", "transient"),  # connection does not exist
    ("25006", "transient"),  # read-only transaction: a demoted primary during failover
    ("40001", "transient"),  # serialization failure
    ("40P01", "transient"),  # deadlock
    ("53100", "transient"),  # disk full
    ("53300", "transient"),  # too many connections
    ("55P03", "transient"),  # lock not available
    ("57014", "transient"),  # statement timeout
    ("57P01", "transient"),  # admin shutdown
    ("57P03", "transient"),  # cannot connect now (starting up)
    ("58030", "transient"),  # I/O error
    ("22003", "message"),  # numeric value out of range
    ("22021", "message"),  # invalid byte sequence (a NUL in text)
    ("22P02", "message"),  # invalid text representation
    ("23505", "message"),  # unique violation
    ("23514", "message"),  # check violation
    ("54000", "message"),  # program limit: index row too large
    ("42P01", "fatal"),  # undefined table
    ("42501", "fatal"),  # insufficient privilege
    ("42703", "fatal"),  # undefined column
    ("28P01", "fatal"),  # invalid password
    ("3D000", "fatal"),  # database does not exist
    ("0A000", "fatal"),  # feature not supported (e.g. locking compressed tuples)
    ("XX000", "fatal"),  # internal error
])
def test_sqlstates(sqlstate: str, fault: str) -> None:
    assert classify(_BY_SQLSTATE[sqlstate]("boom")) == fault


@pytest.mark.parametrize(("exc", "fault"), [
    (ConnectionRefusedError(), "transient"),
    (ConnectionResetError(), "transient"),
    (TimeoutError(), "transient"),
    (asyncpg.InterfaceError("cannot perform operation: connection is closed"), "transient"),
    (asyncpg.InterfaceError("pool is closing"), "transient"),
    # what a pooled connection the server closed while it was idle says next (a restart)
    (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
     "transient"),
    (asyncpg.InterfaceError("the server expects 2 arguments, 1 was passed"), "fatal"),
    (asyncpg.exceptions.ClientConfigurationError("bad option"), "fatal"),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), "message"),
    (kafka_errors.KafkaConnectionError(), "transient"),
    (kafka_errors.RequestTimedOutError(), "transient"),
    (kafka_errors.NotLeaderForPartitionError(), "transient"),
    (kafka_errors.UnknownTopicOrPartitionError(), "transient"),
    (kafka_errors.TopicAuthorizationFailedError(), "fatal"),
    (kafka_errors.MessageSizeTooLargeError(), "fatal"),
    (SettingsError("x"), "fatal"),
    (asyncio.CancelledError(), "fatal"),
    (RecursionError("maximum recursion depth exceeded"), "message"),
    (OverflowError("int too large"), "message"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "message"),
    (KeyError("a bug only some inputs reach"), "message"),
])
def test_other_errors(exc: BaseException, fault: str) -> None:
    assert classify(exc) == fault


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = list(itertools.islice(Backoff(0.1, 1.0).delays(), 6))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_comes_from_the_settings() -> None:
    settings = load_settings({
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db",
        "CIE_RETRY_BACKOFF_FIRST_MS": "250", "CIE_RETRY_BACKOFF_MAX_MS": "2000"})
    assert settings.backoff() == Backoff(0.25, 2.0)
    with pytest.raises(SettingsError, match="CIE_RETRY_BACKOFF_MAX_MS"):
        load_settings({
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db",
            "CIE_RETRY_BACKOFF_FIRST_MS": "250", "CIE_RETRY_BACKOFF_MAX_MS": "100"})
