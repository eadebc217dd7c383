"""The notifier's outbox, for an operator: `cie notify --status` and `--release`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from consumers.platform.db import Conn, queries


async def status_lines(conn: Conn, max_age_hours: int) -> list[str]:
    """The counts of events not notified, then each one refused or in doubt."""
    sql = queries("notifier")
    state = await conn.fetchrow(sql["outbox_state"], max_age_hours)
    assert state is not None
    lines = [f"pending {state['pending']}, refused {state['refused']}, "
             f"in doubt {state['in_doubt']}"]
    lines += [f"{row['state']:<8} {row['event_id']} {row['event_type']} {row['component_id']} "
              f"attempts={row['notify_attempts']} {row['notify_error'] or ''}".rstrip()
              for row in await conn.fetch(sql["unnotified"])]
    return lines


async def release(conn: Conn, event_ids: Sequence[uuid.UUID]) -> tuple[list[uuid.UUID],
                                                                         list[uuid.UUID]]:
    """Events in doubt that the channel shows were never posted go back to pending: (released,
    those not in doubt, left alone)."""
    rows = await conn.fetch(queries("notifier")["release_in_doubt"], list(event_ids))
    released = [row["event_id"] for row in rows]
    missing = sorted(set(event_ids) - set(released), key=str)
    return released, missing
