"""`cie settings`: every setting with its environment variable, default and meaning.

docs/configuration.md is this output (a test keeps the two in step), so a new setting is
documented where it is defined: its field (consumers/platform/settings.py), its variable
(``ENVIRONMENT``) and its meaning here.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumers import topics
from consumers.platform.settings import (
    DEFAULT_METRICS_PORTS,
    ENVIRONMENT,
    SECRET_VARIABLES,
    TOPIC_VARIABLE_PREFIX,
    Settings,
)

# field name -> what it means, one line of Markdown
MEANINGS: Mapping[str, str] = {
    "kafka_bootstrap_servers": "`host:port[,host:port]`",
    "database_url": "libpq URL, `postgresql://user:password@host:port/db`",
    "database_replica_url": (
        "a read replica for the rollup's reads; writes and change marks stay on `DATABASE_URL`,"
        " and a run first waits (up to `CIE_ROLLUP_REPLICA_WAIT_SECONDS`) until the replica has"
        " replayed everything its snapshot of the primary can see"),
    "kafka_security_protocol": "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`",
    "kafka_sasl_mechanism": "required with `SASL_*`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`",
    "kafka_sasl_username": "required with `SASL_*`",
    "kafka_sasl_password": "required with `SASL_*` (a secret)",
    "kafka_ssl_cafile": "the CA that signed the brokers' certificates (TLS)",
    "kafka_ssl_certfile": "this client's certificate (mutual TLS)",
    "kafka_ssl_keyfile": "this client's private key (mutual TLS)",
    "consumer_group": "Kafka consumer group",
    "dead_letter_suffix": "dead letters go to `<topic><suffix>`",
    "batch_max_rows": "flush a batch at this many rows…",
    "batch_max_latency_ms": "…or when its oldest message is this old",
    "batch_backlog_max_rows": (
        "a batch that falls due while the flush ahead of it is written keeps taking messages "
        "until that flush ends, up to this many (never fewer than `CIE_BATCH_MAX_ROWS`) and "
        "while it holds less than `CIE_BATCH_BACKLOG_MAX_BYTES`: under a backlog the consumer "
        "writes bigger batches and neither the decoding nor the writing waits for the other"),
    "batch_max_bytes": (
        "…or when it holds this many bytes (its values and their encoded rows): a batch of "
        "large messages is written before it has `CIE_BATCH_MAX_ROWS` of them"),
    "batch_backlog_max_bytes": (
        "what a batch that keeps growing while the flush ahead of it is written may hold "
        "(never less than `CIE_BATCH_MAX_BYTES`); with the row limits it bounds the "
        "consumer's memory (docs/reliability.md, Memory)"),
    "drain_deadline_seconds": (
        "on SIGTERM or revocation: flush and commit within this (past it on revocation: give "
        "the partitions up uncommitted)"),
    "max_value_bytes": "a larger message value is a dead letter, never decoded",
    "free_form_max_bytes": (
        "a free-form JSON field (a feature vector, an improvement event's payload) with longer "
        "text is a dead letter, never decoded"),
    "free_form_max_elements": (
        "a message whose free-form fields hold more values than this (inside objects and "
        "arrays, all fields together) is a dead letter"),
    "free_form_max_depth": (
        "a message with a free-form field nested deeper than this is a dead letter"),
    "liveness_timeout_seconds": (
        "`/healthz` fails when the consume loop has not moved for this long"),
    "fetch_max_bytes": "what all partitions' fetched, not yet consumed records may hold together",
    "max_partition_fetch_bytes": "what one partition may add to that per fetch",
    "kafka_session_timeout_ms": "a group member silent this long is taken for dead",
    "kafka_heartbeat_interval_ms": "how often a member tells the group it is alive",
    "kafka_max_poll_interval_ms": (
        "the longest gap between polls before a member is removed from the group"),
    "kafka_group_instance_id": (
        "static membership (KIP-345): a member that restarts under the same id within the "
        "session timeout keeps its partitions, no rebalance. Stable and unique per member (a "
        "StatefulSet pod's name); never a Deployment's random pod name, which would leave the "
        "old member's partitions unread until its session expires"),
    "producer_max_request_bytes": (
        "the dead-letter producer's largest request (a dead letter is cut below it; the DLQ's "
        "`max.message.bytes` must allow it)"),
    "lag_refresh_seconds": "how often `cie_consumer_lag_messages` is read from the broker",
    "db_pool_size": "writer connections per process",
    "db_command_timeout_seconds": "the longest a statement may run",
    "retry_backoff_first_ms": "the first retry delay after a transient error (doubled per retry)",
    "retry_backoff_max_ms": "the cap of that doubling",
    "clock_skew_tolerance_ms": (
        "an order submitted after its fill by at most this is taken as submitted at the fill"),
    "future_tolerance_seconds": (
        "an event time further ahead of the consumer's clock is a dead letter"),
    "validator_group": "the validator's consumer group",
    "validator_gap_tolerance_seconds": "oldest a start or end bar may be",
    "validator_neutral_band": "returns within ± this are `NEUTRAL`",
    "validator_max_horizon_minutes": "how far back a new bar re-validates",
    "validator_sweep_seconds": "how often the validator sweeps for what is still unvalidated",
    "validator_sweep_batch": "rows per sweep batch",
    "validator_ingest_wait_seconds": (
        "how long to wait for the ingest group to store a batch's bars"),
    "validator_lookup_past_bars": (
        "bars per instant past which an instant off a bar's time is looked up, not merged"),
    "rollup_time_zone": "IANA zone of the rollups' days, weeks and months",
    "rollup_capital_base": (
        "equity at the start of each period (returns and drawdown are fractions of equity)"),
    "rollup_periods_per_year": "annualisation of daily figures",
    "rollup_risk_free_rate": "annual risk-free rate (0.04 = 4 %)",
    "rollup_replica_wait_seconds": (
        "how long a rollup run waits for `CIE_DATABASE_REPLICA_URL` to catch up with the "
        "primary"),
    "validator_rollup_seconds": (
        "the validator also runs the rollup this often (0: never; the CronJob does)"),
    "scheduler_poll_ms": "`cie schedule`: time between passes",
    "scheduler_batch": "tasks claimed (and published) per transaction",
    "scheduler_max_failures": (
        "consecutive failures that disable a task (with an `optimization_disabled` improvement "
        "event)"),
    "scheduler_retry_base_seconds": (
        "a failed task is retried after this, doubled per further failure, never later than one"
        " period"),
    "scheduler_run_timeout_seconds": (
        "a run with no report for this long counts as failed (the reaper)"),
    "ab_evaluate_seconds": (
        "how often `cie schedule` evaluates the running A/B tests (0: never; `cie evaluate-ab` "
        "then)"),
    "ab_significance_level": "an A/B difference counts when Welch's p is below this…",
    "ab_min_trades": "…with at least this many trades per arm",
    "ab_max_duration_factor": (
        "a test short of trades at the end of its duration runs on, up to this many durations, "
        "then is rejected as inconclusive"),
    "discord_webhook_url": (
        "`cie notify`: the Discord webhook (a secret; unset: nothing to post, exit 0)"),
    "notify_poll_ms": "`cie notify`: time between passes",
    "notify_batch": "events leased per pass",
    "notify_timeout_seconds": (
        "a POST with no answer within this is in doubt (never posted again on its own)"),
    "notify_lease_seconds": (
        "how long a notifier holds the events it leased (a dead one's go back after this)"),
    "notify_max_age_hours": "events recorded longer ago are not posted",
    "notify_retry_base_seconds": (
        "the first delay after a 5xx or a connection refused (doubled per attempt)"),
    "notify_retry_max_seconds": "the cap of that doubling",
    "archive_url": (
        "`cie archive`: `s3://bucket/prefix` (credentials, region, endpoint: "
        "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` or `AWS_SHARED_CREDENTIALS_FILE`, "
        "`AWS_REGION`, `AWS_ENDPOINT_URL`)"),
    "archive_horizon_days": (
        "archive months that ended this long ago (unset: each table's retention)"),
    "archive_batch_rows": "rows per fetch and per Parquet row group",
    "schema_registry_url": (
        "a Confluent-compatible schema registry's API (Apicurio: `.../apis/ccompat/v7`): "
        "messages framed by a registry serializer (Avro, Protobuf, JSON Schema) are decoded "
        "with the schema their id names; unset: such a message is a dead letter. `cie "
        "contracts register` registers the contracts there"),
    "schema_registry_timeout_seconds": (
        "a registry request with no answer within this counts as an outage (ingest pauses "
        "and retries, nothing is dead-lettered)"),
    "metrics_host": "where `/metrics`, `/healthz` and `/readyz` are served",
    "metrics_port": (
        "their port (`0`: not served); each long-running command has its own default, so they "
        "run side by side"),
    "log_level": "`DEBUG`, `INFO`, `WARNING`, `ERROR`",
    "log_format": "`json`, `console`, or `auto` (console on a terminal, JSON otherwise)",
}

HEADER = """\
# Configuration

<!-- Generated by `cie settings` (consumers/cli/reference.py); edit the meanings there. -->

One frozen `Settings` object (`consumers/platform/settings.py`) is read from the environment
at start. Each command requires only what it talks to (`KAFKA_BOOTSTRAP_SERVERS` for Kafka,
`DATABASE_URL` for PostgreSQL). Errors name the variable and the problem, never the value.
"""


def render() -> str:
    """The configuration reference as Markdown."""
    lines = [HEADER, "| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{ENVIRONMENT[name]}` | {_default(name)} | {MEANINGS[name]} |"
              for name in ENVIRONMENT]
    lines += ["", "## Topic names", "",
              f"`{TOPIC_VARIABLE_PREFIX}<NAME>` sets a topic's Kafka name:", "",
              "| variable | default | the topic |", "|---|---|---|"]
    lines += [f"| `{TOPIC_VARIABLE_PREFIX}{topic.name.upper()}` | `{topic.default}` | "
              f"{'published by `cie schedule`' if topic in topics.PUBLISHED else 'consumed'} |"
              for topic in (*topics.TOPICS, *topics.PUBLISHED)]
    lines += ["", "## Secrets", "",
              "`DATABASE_PASSWORD` is put into `DATABASE_URL` (quoted), so the rest of the URL "
              "can live in a ConfigMap.", "",
              "`<NAME>_FILE` reads a secret from a file (a Kubernetes Secret mounted as a volume) "
              "for " + ", ".join(f"`{name}`" for name in SECRET_VARIABLES)
              + "; setting both `<NAME>` and `<NAME>_FILE` is an error. Secrets never appear in "
              "logs, errors, `repr(settings)` or `/metrics`.", ""]
    return "\n".join(lines)


def _default(name: str) -> str:
    if name in ("kafka_bootstrap_servers", "database_url"):
        return "required"
    if name == "metrics_port":
        return ", ".join(f"`{port}` ({command})" for command, port in DEFAULT_METRICS_PORTS.items())
    value = getattr(Settings(), name)
    if value is None:
        return "unset"
    return f"`{value}`" if value != "" else "`\"\"`"
