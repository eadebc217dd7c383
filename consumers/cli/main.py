"""`cie`: the one entry point. Parse the command line, build Settings once (only what the
command needs is required), run the command, and turn the failures an operator can act on into
one log line and an exit status."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from consumers import topics
from consumers.cli import commands
from consumers.cli.parser import build_parser
from consumers.errors import CieError, SettingsError
from consumers.ingest.kafka import require_broker
from consumers.platform import faults, processes
from consumers.platform.logs import configure_logging
from consumers.platform.service import metrics_port
from consumers.platform.settings import Need, Settings, load_settings

log = structlog.get_logger(__name__)


def needs_of(args: argparse.Namespace) -> tuple[Need, ...]:
    """What the command talks to: only those settings are required. ``validate --once`` is a
    sweep of the database alone."""
    if args.command == "validate" and args.once:
        return ("database",)
    needs: tuple[Need, ...] = args.needs
    return needs


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if "kafka" in needs_of(args):  # a broker that refuses us says why before anything starts
        await require_broker(settings)
    run: commands.Command = args.run
    return await run(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(needs=needs_of(args))
        if unknown := topics.unknown_names(settings):
            known = ", ".join(topics.BY_NAME)
            raise SettingsError(f"{' '.join(unknown)}: no such topic ({known})")
    except CieError as exc:
        print(f"cie: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if getattr(args, "processes", 1) > 1:
        environments = processes.child_environments(
            os.environ, args.processes, metrics_port(settings, args.command))
        return processes.run_children(processes.without_processes_option(argv), environments)
    try:
        return asyncio.run(_run(settings, args))
    except CieError as exc:
        log.error("command.failed", command=args.command, error=str(exc))
        return 1
    except (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # a server that cannot be reached or refuses us: one line saying which, no traceback
        log.error("command.failed", command=args.command,
                  error=f"{type(exc).__name__}: {faults.describe(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
