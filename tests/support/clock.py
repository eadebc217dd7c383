"""Test dates derived from today, so no test starts failing as the calendar moves on.

The data a test writes must stay inside every retention horizon the code applies (the rollups
skip periods older than the trades' and predictions' retention; TimescaleDB drops old chunks),
whatever year the suite runs in. ``TODAY`` is read once per run, so a test that runs across
midnight sees one day throughout.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

TODAY: date = datetime.now(UTC).date()


def first_monday(months_ago: int) -> date:
    """The first Monday of the calendar month ``months_ago`` months before this one."""
    month_index = TODAY.year * 12 + TODAY.month - 1 - months_ago
    first = date(month_index // 12, month_index % 12 + 1, 1)
    return first + timedelta(days=-first.weekday() % 7)


# A Monday in the first week of its month, six months back: its week and the next lie in the
# same month, it is well inside every retention horizon (the shortest is two years), and its
# chunks are older than every compression horizon (the longest is 90 days plus a week's chunk),
# so a test that runs the compression jobs finds them compressible.
MONDAY: date = first_monday(6)
T0: datetime = datetime.combine(MONDAY, time(14, 30), UTC)


def at(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), UTC)
