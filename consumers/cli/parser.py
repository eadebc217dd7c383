"""`cie`'s command line: one function per command adds its parser and names what it runs.

What each command does is in consumers/cli/commands.py; nothing here talks to a server.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from consumers import topics
from consumers.cli import commands
from consumers.platform.settings import DEFAULT_METRICS_PORTS

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cie",
        description="Analytics ingestion for the Continuous Improvement Engine. Configuration "
        "comes from the environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, CIE_*).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _add_migrate(sub: Subparsers) -> None:
    migrate = sub.add_parser("migrate", help="apply the schema/*.sql migrations")
    migrate.add_argument("--status", action="store_true", help="list each file's state")
    migrate.add_argument("--dry-run", action="store_true", help="list what would run")
    migrate.add_argument(
        "--without-timescaledb", action="store_true",
        help="take the plain-PostgreSQL path even where TimescaleDB is available",
    )
    migrate.set_defaults(run=commands.cmd_migrate, needs=("database",))


def _add_maintain(sub: Subparsers) -> None:
    maintain = sub.add_parser(
        "maintain", help="refresh daily summaries and remove expired rows (plain PostgreSQL); "
        "run TimescaleDB's jobs that are overdue or failed (TimescaleDB)")
    maintain.add_argument("--batch-rows", type=int, default=10_000,
                          help="rows per delete or refresh batch (default 10000)")
    maintain.set_defaults(run=commands.cmd_maintain, needs=("database",))


def _add_archive(sub: Subparsers) -> None:
    archive = sub.add_parser(
        "archive", help="trade_outcomes and trade_fills months past the horizon (default: "
        "retention) to Parquet in S3 at CIE_ARCHIVE_URL, verified before retention may remove "
        "them")
    archive.add_argument("--status", action="store_true",
                         help="list the archived months, and rows past retention not yet gone")
    archive.add_argument("--restore", metavar="YYYY-MM", type=_month, default=None,
                         help="download a month's parts (verified) into --into")
    archive.add_argument("--table", dest="tables", action="append",
                         choices=["trade_outcomes", "trade_fills"],
                         help="--restore: this table only (repeatable; default both)")
    archive.add_argument("--into", type=Path, default=Path("."),
                         help="--restore: the directory to write into (default .)")
    archive.add_argument("--adopt", action="store_true",
                         help="record parts found in S3 that this database does not know (after "
                         "restoring the database to an earlier time) instead of refusing")
    archive.set_defaults(run=commands.cmd_archive, needs=("database",))


def _add_rollup(sub: Subparsers) -> None:
    rollup_ = sub.add_parser(
        "rollup", help="recompute strategy_performance and model_performance where facts changed")
    rollup_.add_argument("--full", action="store_true",
                         help="recompute every period and model day (after changing a setting)")
    rollup_.set_defaults(run=commands.cmd_rollup, needs=("database",))


def _add_consume(sub: Subparsers) -> None:
    consume = sub.add_parser(
        "consume", help="run the ingest consumers until SIGTERM" + _serving("consume"))
    consume.add_argument(
        "--pipelines", default="",
        help=f"comma-separated subset of {','.join(topics.BY_NAME)} (default: all)")
    consume.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="run N group members as N processes, one core each (metrics ports: the base "
        "port plus 0..N-1)")
    consume.set_defaults(run=commands.cmd_consume, needs=("kafka", "database"))


def _add_validate(sub: Subparsers) -> None:
    validate = sub.add_parser(
        "validate", help="backfill prediction outcomes and trade excursions (own group and a "
        "sweep)" + _serving("validate"))
    validate.add_argument("--once", action="store_true",
                          help="drain the backlog with the sweep, then exit (no Kafka)")
    validate.set_defaults(run=commands.cmd_validate, needs=("kafka", "database"))


def _add_schedule(sub: Subparsers) -> None:
    schedule = sub.add_parser(
        "schedule", help="run the optimization scheduler until SIGTERM: publish due tasks to "
        "optimization-tasks, retry or disable failed ones" + _serving("schedule"))
    schedule.add_argument("--partitions", type=int, default=6,
                          help="partitions of optimization-tasks if it must be created (6)")
    schedule.set_defaults(run=commands.cmd_schedule, needs=("kafka", "database"))


def _add_evaluate_ab(sub: Subparsers) -> None:
    evaluate_ab = sub.add_parser(
        "evaluate-ab", help="evaluate every running A/B test once: refresh its metrics, "
        "conclude it when its duration is over (cie schedule does this every "
        "CIE_AB_EVALUATE_SECONDS)")
    evaluate_ab.set_defaults(run=commands.cmd_evaluate_ab, needs=("kafka", "database"))


def _add_notify(sub: Subparsers) -> None:
    notify = sub.add_parser(
        "notify", help="post improvement events to the Discord webhook CIE_DISCORD_WEBHOOK_URL "
        "until SIGTERM, each at most once" + _serving("notify"))
    notify.add_argument("--once", action="store_true",
                        help="post what is waiting, then exit")
    notify.add_argument("--status", action="store_true",
                        help="count the events not notified; list those refused or in doubt")
    notify.add_argument("--release", nargs="+", type=uuid.UUID, metavar="EVENT_ID",
                        help="events in doubt that the channel shows were not posted: post them")
    notify.set_defaults(run=commands.cmd_notify, needs=("database",))


def _add_topics(sub: Subparsers) -> None:
    topics_ = sub.add_parser(
        "topics", help="ensure: create the source and dead-letter topics where missing "
        "(idempotent; clusters without Strimzi)")
    topics_.add_argument("action", nargs="?", choices=["ensure"], default="ensure")
    topics_.add_argument("--partitions", type=int, default=6,
                         help="partitions of each source topic (6); dead-letter topics get 1")
    topics_.add_argument("--replication-factor", type=int, default=None,
                         help="replicas (default: as many as brokers, at most 3)")
    topics_.set_defaults(run=commands.cmd_topics, needs=("kafka",))


def _add_dlq(sub: Subparsers) -> None:
    dlq = sub.add_parser(
        "dlq", help="show dead letters (reason, source coordinates), or replay them to their "
        "source topic after a fix (once: progress kept in a consumer group)")
    dlq.add_argument("action", choices=["show", "replay"])
    dlq.add_argument("topic", nargs="?", default="",
                     help=f"source topic: {', '.join(topics.BY_NAME)} or a Kafka topic name "
                     "(show: default all)")
    dlq.add_argument("--class", dest="error_class", default=None,
                     help="only dead letters of this error class (e.g. LedgerError)")
    dlq.add_argument("--since", type=_utc_time, default=None,
                     help="show: dead-lettered at or after this ISO time")
    dlq.add_argument("--until", type=int, default=None,
                     help="replay: stop before this dead-letter offset")
    dlq.add_argument("--dry-run", action="store_true", help="replay: list, send nothing")
    dlq.add_argument("--from-beginning", action="store_true",
                     help="replay: from the first letter, when this filter has no position yet "
                     "(its first replay, or a position that expired)")
    dlq.set_defaults(run=commands.cmd_dlq, needs=("kafka",))


def _add_trace(sub: Subparsers) -> None:
    trace = sub.add_parser(
        "trace", help="the Kafka records behind a stored fill or trade: every fill of its "
        "trade with its topic, partition, offset and producer headers, read back from Kafka "
        "while retained (JSON)")
    trace.add_argument("id", type=uuid.UUID, help="a fill_id or a trade_id")
    trace.add_argument("--no-kafka", action="store_true",
                       help="the stored coordinates only; do not read the records")
    trace.set_defaults(run=commands.cmd_trace, needs=("database", "kafka"))


def _add_contracts(sub: Subparsers) -> None:
    contracts = sub.add_parser(
        "contracts", help="print every topic's contract as JSON Schema; `register`: register "
        "each consumed topic's contract in the schema registry (CIE_SCHEMA_REGISTRY_URL) "
        "under <topic>-value")
    contracts.add_argument("action", nargs="?", choices=["print", "register"], default="print")
    contracts.add_argument("--format", choices=["avro", "protobuf", "json"], default="avro",
                           help="register: the schema kind producers serialize with (avro)")
    contracts.add_argument(
        "--compatibility", default="BACKWARD",
        choices=["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                 "FULL_TRANSITIVE", "NONE"],
        help="register: the subject's compatibility rule, set before registering (BACKWARD)")
    contracts.set_defaults(run=commands.cmd_contracts, needs=())


def _add_settings(sub: Subparsers) -> None:
    settings = sub.add_parser(
        "settings", help="print every setting: its environment variable, default and meaning "
        "(docs/configuration.md)")
    settings.set_defaults(run=commands.cmd_settings, needs=())


def _add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="produce a simulated trading session")
    demo.add_argument("--minutes", type=int, default=60, help="minutes of market data (60)")
    demo.add_argument("--symbols", default="AAPL,MSFT,NVDA,AMZN,TSLA")
    demo.add_argument("--seed", type=int, default=7, help="random seed (7)")
    demo.add_argument("--encoding", choices=["json", "msgpack"], default="json",
                      help="write the events as JSON (the default) or as MessagePack, "
                      "with a content-type: application/msgpack header")
    demo.add_argument("--loop", type=float, default=0, metavar="SECONDS",
                      help="then play the optimization worker and wait (at most SECONDS) for "
                      "the session's task to complete and its A/B test to conclude (needs "
                      "cie consume and cie schedule running)")
    demo.set_defaults(run=commands.cmd_demo, needs=("kafka",))


# the order `cie --help` lists them in
COMMANDS = (_add_migrate,
            _add_maintain,
            _add_archive,
            _add_rollup,
            _add_consume,
            _add_validate,
            _add_schedule,
            _add_evaluate_ab,
            _add_notify,
            _add_topics,
            _add_dlq,
            _add_trace,
            _add_contracts,
            _add_settings,
            _add_demo)


def _serving(command: str) -> str:
    """The help's note on where a long-running command serves its metrics."""
    return (f" (metrics on port {DEFAULT_METRICS_PORTS[command]} unless CIE_METRICS_PORT is "
            "set)")


def _month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a month (YYYY-MM)") from None


def _utc_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
