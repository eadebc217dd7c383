"""What a run costs the machine: CPU seconds of the consumer, the database server and the
broker (from /proc), and the WAL the server wrote, sampled as rows arrive, so that costs can
be given per 1,000 rows over the steady part of a run (bench/capacity.py builds on them).

Everything runs on one machine here, so each side's processes are told apart by name: the
server's are ``postgres``, the broker is the Java process running ``kafka.Kafka``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


class Sample(NamedTuple):
    rows: int
    consumer: float  # CPU seconds so far
    server: float
    broker: float
    wal_bytes: int  # pg_current_wal_lsn() as a byte position


class Cost(NamedTuple):
    """Per 1,000 rows, between two samples."""

    consumer_cpu_ms: float
    server_cpu_ms: float
    broker_cpu_ms: float
    wal_kib: float


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS_PER_SECOND


def with_children(pid: int) -> list[int]:
    """``pid`` and its children (``cie consume --processes N`` forks its members)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(child) for child in children)]


def status_kib(pid: int, field_name: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``), 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field_name + ":")), 0)


def named(match: str, in_cmdline: bool = False) -> list[int]:
    """Processes whose command name is ``match`` (or whose command line contains it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = ((entry / "cmdline").read_bytes().decode(errors="replace") if in_cmdline
                    else (entry / "comm").read_text().strip())
        except OSError:
            continue
        if (match in text) if in_cmdline else text == match:
            found.append(int(entry.name))
    return found


def sample(rows: int, consumer_pid: int, wal_bytes: int) -> Sample:
    return Sample(rows, cpu_seconds(with_children(consumer_pid)), cpu_seconds(named("postgres")),
                  cpu_seconds(named("kafka.Kafka", in_cmdline=True)), wal_bytes)


def steady_cost(samples: list[Sample], total_rows: int) -> Cost | None:
    """The cost of the rows written between 10 % and 90 % of ``total_rows`` (start-up and the
    last partitions' tail left out), or None if the samples do not span them."""
    first = next((s for s in samples if s.rows >= total_rows * 0.1), None)
    last = next((s for s in samples if s.rows >= total_rows * 0.9), None)
    if first is None or last is None or last.rows <= first.rows:
        return None
    thousands = (last.rows - first.rows) / 1000
    return Cost(
        consumer_cpu_ms=round((last.consumer - first.consumer) * 1000 / thousands, 2),
        server_cpu_ms=round((last.server - first.server) * 1000 / thousands, 2),
        broker_cpu_ms=round((last.broker - first.broker) * 1000 / thousands, 2),
        wal_kib=round((last.wal_bytes - first.wal_bytes) / 1024 / thousands, 1))
