"""N group members in one pod: ``cie consume --processes N`` runs N copies of itself.

One Python process decodes and encodes on one core, however many the pod has; Kafka's group
protocol already spreads partitions over members, so the way to use more cores is more
members. Each child is a whole ``cie consume`` (its own consumer, pool, dead-letter producer
and checkpoint: nothing is shared, so nothing needs a lock), serving its metrics and health on
its own port: the base port plus its index (0 keeps every port ephemeral). The parent only
forwards SIGTERM/SIGINT and waits. When one child fails, the parent stops the others (each
drains within its deadline) and exits with the child's status, so Kubernetes restarts the pod
as it would a single process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import structlog

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.2  # how often the parent looks for a child that ended


def child_environments(
    environ: Mapping[str, str], count: int, metrics_port: int
) -> list[dict[str, str]]:
    """Each child's environment: its own metrics port, and its own static group membership
    when one is configured (two members may not share an instance id)."""
    out = []
    for index in range(count):
        env = {**environ, "CIE_METRICS_PORT": str(metrics_port + index if metrics_port else 0)}
        if instance := environ.get("CIE_KAFKA_GROUP_INSTANCE_ID"):
            env["CIE_KAFKA_GROUP_INSTANCE_ID"] = f"{instance}-{index}"
        out.append(env)
    return out


def run_children(argv: Sequence[str], environments: Sequence[Mapping[str, str]]) -> int:
    """Run ``python -m consumers *argv`` once per environment until all end; the exit status
    is the first failed child's, or 0."""
    command = [sys.executable, "-m", "consumers", *argv]  # our own, on this interpreter
    children = [subprocess.Popen(command, env=dict(env))  # noqa: S603
                for env in environments]
    log.info("processes.started", pids=[child.pid for child in children])
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    status = 0
    while any(child.poll() is None for child in children):
        for child in children:
            if child.returncode is not None and not stopping:  # ended on its own
                status = _exit_status(child.returncode)
                log.error("processes.child_ended", pid=child.pid, status=status)
                stop(signal.SIGTERM, None)
        time.sleep(POLL_SECONDS)
    # a child that failed while draining fails the pod too
    return status or next(
        (_exit_status(child.returncode) for child in children if child.returncode), 0)


def _exit_status(returncode: int) -> int:
    """A child killed by a signal exits as a shell reports it: 128 + the signal's number."""
    return returncode if returncode >= 0 else 128 - returncode


def without_processes_option(argv: Sequence[str]) -> list[str]:
    """The command line a child runs: the parent's, less ``--processes N``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out
