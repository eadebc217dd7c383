"""`cie` processes a test starts, and their environment.

A child inherits the test runner's environment (PATH, the venv, HOME), but never its project
settings: CI and `stack.sh test` export DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS for the
fixtures, and a child that also got a test's DATABASE_URL_FILE would see both and refuse to
start. So each child gets exactly the settings its test names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

SETTING_PREFIXES = ("CIE_", "DATABASE_", "KAFKA_", "AWS_", "DISCORD_")
# what a `cie` process needs to reach S3 (the stack's: deploy/local/stack.sh env)
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def cie_environment(settings: dict[str, str]) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith(SETTING_PREFIXES)}
    return {**inherited, **settings}


async def run_cie(*args: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """``cie *args`` to its end: (exit status, stdout and stderr together). One still running
    after ``timeout`` is killed and fails the test with what it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", *args, env=cie_environment(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"cie {' '.join(args)} still running after {timeout}s (a crash "
                             f"loop?): {out.decode(errors='replace')[-2000:]}") from None
    return await proc.wait(), out.decode(errors="replace")


@contextlib.asynccontextmanager
async def cie_process(environment: dict[str, str], log: Path,
                      *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``cie *args`` as a real process (for SIGKILL and outage tests), logging to ``log``;
    killed at the end if still running."""
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", *args, env=cie_environment(environment),
            stdout=sink, stderr=sink)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await asyncio.wait_for(proc.wait(), timeout=30)


@dataclass
class Fleet:
    """Several processes of one `cie` command, each with its own log."""

    logs: list[Path]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)  # once stopped

    def texts(self) -> list[str]:
        return [log.read_text() for log in self.logs]

    def tails(self) -> list[str]:
        """The end of each log, for an assertion's message."""
        return [text[-2000:] for text in self.texts()]


@contextlib.asynccontextmanager
async def cie_fleet(command: str, environment: dict[str, str], logs: list[Path],
                    timeout: float = 30) -> AsyncIterator[Fleet]:
    """``cie command`` once per log, all running together; stopped with SIGTERM at the end
    (each within ``timeout``), their exit codes in ``exit_codes``."""
    fleet = Fleet(logs)
    try:
        for log in logs:
            with log.open("wb") as sink:
                fleet.processes.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "consumers", command,
                    env=cie_environment(environment), stdout=sink, stderr=sink))
        yield fleet
    finally:
        for proc in fleet.processes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        fleet.exit_codes = [await asyncio.wait_for(proc.wait(), timeout=timeout)
                            for proc in fleet.processes]
