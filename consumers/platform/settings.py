"""Settings: one frozen, typed object built once from the environment at start-up.

Every field has one environment variable. ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` keep
the names producers and operators already use; the rest carry the ``CIE_`` prefix (or the
``KAFKA_`` prefix for client security options). Errors name the variable and the problem, never
the value, so secrets do not reach logs.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from consumers.errors import SettingsError
from consumers.platform.faults import Backoff

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: do not serve
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
DatabaseUrl = Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://")]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "console"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a process needs to know about its surroundings."""

    # Both required by the commands that use them (load_settings' ``needs``), and only by those.
    kafka_bootstrap_servers: str = ""
    database_url: DatabaseUrl | Literal[""] = ""
    # Optional read replica for the rollup's reads (writes always go to database_url).
    database_replica_url: DatabaseUrl | None = None
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    consumer_group: NonEmpty = "cie-ingest"
    # CIE_TOPIC_<NAME>=<kafka topic> overrides a topic's default name (consumers/topics.py)
    topic_names: dict[str, str] = msgspec.field(default_factory=dict)
    dead_letter_suffix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]+$")] = ".dlq"
    batch_max_rows: PositiveInt = 1000
    # 100, not 500: at a few thousand events a second a batch fills by age, not by rows, and
    # the age was most of a bar's end-to-end time (the soak: p50 330 ms at 500; bench/README.md)
    batch_max_latency_ms: PositiveInt = 100
    # A due batch keeps taking records while the flush ahead of it is in flight, up to this
    # many (never fewer than batch_max_rows): under a backlog, bigger batches, no waiting.
    batch_backlog_max_rows: PositiveInt = 10_000
    # The same two limits in bytes held (values and their encoded rows): a batch of large
    # messages is due before it has batch_max_rows of them (docs/reliability.md, "Memory").
    batch_max_bytes: PositiveInt = 8 * 1024 * 1024
    batch_backlog_max_bytes: PositiveInt = 16 * 1024 * 1024
    drain_deadline_seconds: PositiveInt = 20
    # A value larger than this is a dead letter without being decoded (hostile producers).
    max_value_bytes: PositiveInt = 1_048_576
    # What one message's free-form JSON fields (feature vectors, payloads) may decode to:
    # bytes of one field's text, values in all of them, nesting (contracts/free_form.py).
    free_form_max_bytes: PositiveInt = 65_536
    free_form_max_elements: PositiveInt = 10_000
    free_form_max_depth: PositiveInt = 32
    # /healthz fails when the consume loop has not moved for this long (a stuck member).
    liveness_timeout_seconds: PositiveInt = 120
    # What all partitions' fetched, not yet consumed records may hold together (aiokafka's
    # fetch_max_bytes); one partition gets at most max_partition_fetch_bytes of it per fetch.
    fetch_max_bytes: PositiveInt = 32 * 1024 * 1024
    max_partition_fetch_bytes: PositiveInt = 4 * 1024 * 1024
    # Kafka group membership. A member silent for session_timeout is taken for dead; one that
    # does not poll within max_poll_interval is removed from the group (the runner keeps
    # polling while a flush waits out an outage). group_instance_id turns on static
    # membership (KIP-345): a member that restarts under the same id within the session
    # timeout gets its partitions back without a rebalance. It must be stable per member and
    # unique in the group: a StatefulSet's pod name, not a Deployment's (a random name would
    # leave the old member's partitions unread until its session times out).
    kafka_session_timeout_ms: PositiveInt = 10_000
    kafka_heartbeat_interval_ms: PositiveInt = 3_000
    kafka_max_poll_interval_ms: PositiveInt = 300_000
    kafka_group_instance_id: NonEmpty | None = None
    # The largest request the dead-letter producer sends (the broker's max.message.bytes must
    # be at least this); a dead letter is cut to fit below it (consumers/ingest/kafka.py).
    producer_max_request_bytes: Annotated[int, msgspec.Meta(ge=65_536)] = 1_048_576
    # How often consumer lag is read from the broker (consumers/ingest/lag.py).
    lag_refresh_seconds: PositiveInt = 15
    # The writers' connection pool per process, and how long one statement may run.
    db_pool_size: PositiveInt = 4
    db_command_timeout_seconds: PositiveInt = 60
    # Transient errors (database or broker outage) are retried after 0.1, 0.2, 0.4 ... seconds,
    # at most retry_backoff_max_ms apart (consumers/platform/faults.py).
    retry_backoff_first_ms: PositiveInt = 100
    retry_backoff_max_ms: PositiveInt = 10_000
    # Two hosts' clocks disagree by a few milliseconds: an order submitted "after" its fill by
    # at most this much is taken as submitted at the fill (latency 0), beyond it refused.
    clock_skew_tolerance_ms: Annotated[int, msgspec.Meta(ge=0)] = 1_000
    # An event time further than this ahead of the consumer's clock is refused.
    future_tolerance_seconds: Annotated[int, msgspec.Meta(ge=0)] = 300
    validator_group: NonEmpty = "cie-validator"
    validator_gap_tolerance_seconds: PositiveInt = 300
    validator_neutral_band: Decimal = Decimal("0.0005")
    validator_max_horizon_minutes: PositiveInt = 1440
    validator_sweep_seconds: PositiveInt = 60
    validator_sweep_batch: PositiveInt = 50_000
    validator_ingest_wait_seconds: Annotated[int, msgspec.Meta(ge=0)] = 30
    validator_lookup_past_bars: Annotated[int, msgspec.Meta(ge=0)] = 20
    rollup_time_zone: NonEmpty = "UTC"
    rollup_capital_base: Decimal = Decimal("100000")
    rollup_periods_per_year: PositiveInt = 252
    rollup_risk_free_rate: Decimal = Decimal(0)
    rollup_replica_wait_seconds: PositiveInt = 30
    validator_rollup_seconds: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: never
    # The optimization scheduler (consumers/improvement/scheduler.py).
    scheduler_poll_ms: PositiveInt = 5_000
    scheduler_batch: PositiveInt = 100
    scheduler_max_failures: PositiveInt = 5
    scheduler_retry_base_seconds: PositiveInt = 60
    scheduler_run_timeout_seconds: PositiveInt = 3_600
    # A/B test evaluation (consumers/improvement/abtest.py), in the scheduler's loop.
    ab_evaluate_seconds: Annotated[int, msgspec.Meta(ge=0)] = 300  # 0: never (cie evaluate-ab)
    ab_significance_level: Decimal = Decimal("0.05")
    ab_min_trades: Annotated[int, msgspec.Meta(ge=2)] = 30
    # a test short of trades at the end of its duration runs on, up to this many durations
    ab_max_duration_factor: Decimal = Decimal(2)
    # The Discord notifier (consumers/improvement/notifier.py). The webhook URL is a secret
    # (it holds the webhook's token); without it `cie notify` has nothing to do.
    discord_webhook_url: NonEmpty | None = None
    notify_poll_ms: PositiveInt = 2_000
    notify_batch: PositiveInt = 20
    notify_timeout_seconds: PositiveInt = 10
    notify_lease_seconds: PositiveInt = 300
    notify_max_age_hours: PositiveInt = 24
    notify_retry_base_seconds: PositiveFloat = 5.0
    notify_retry_max_seconds: PositiveFloat = 600.0
    # Cold storage (consumers/archive/): where `cie archive` writes Parquet (s3://bucket/prefix;
    # credentials, region and endpoint from the standard AWS variables), how old a month must
    # be (None: each table's retention), and rows per fetch and per Parquet row group.
    archive_url: NonEmpty | None = None
    archive_horizon_days: PositiveInt | None = None
    archive_batch_rows: PositiveInt = 50_000
    # A Confluent-compatible schema registry (its API's base URL, e.g. Apicurio's
    # .../apis/ccompat/v7): the schemas of messages framed by a registry serializer (Avro,
    # Protobuf, JSON Schema) are looked up there by id; without it such a message is a dead
    # letter.
    schema_registry_url: NonEmpty | None = None
    schema_registry_timeout_seconds: PositiveFloat = 5.0
    metrics_host: NonEmpty = "0.0.0.0"  # noqa: S104 - a pod's probes and scrapes come from outside
    # None: the command's own default (DEFAULT_METRICS_PORTS), so two commands started side by
    # side with defaults do not fight over one port.
    metrics_port: Port | None = None
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"

    def dead_letter_topic(self, topic: str) -> str:
        """Where the dead letters of the Kafka topic ``topic`` go."""
        return f"{topic}{self.dead_letter_suffix}"

    def backoff(self) -> Backoff:
        return Backoff(self.retry_backoff_first_ms / 1000, self.retry_backoff_max_ms / 1000)

    def __repr__(self) -> str:  # the password must never be printed
        shown = {
            name: ("***" if name in _SECRET_FIELDS and value is not None else value)
            for name, value in msgspec.structs.asdict(self).items()
        }
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__


# The metrics port of each long-running command when CIE_METRICS_PORT is not set.
DEFAULT_METRICS_PORTS: Mapping[str, int] = {
    "consume": 9108, "validate": 9109, "schedule": 9110, "notify": 9111}

_SECRET_FIELDS = frozenset({"kafka_sasl_password", "database_url", "database_replica_url",
                            "discord_webhook_url"})

TOPIC_VARIABLE_PREFIX = "CIE_TOPIC_"  # CIE_TOPIC_BARS names the "bars" topic

# field name -> environment variable
ENVIRONMENT: Mapping[str, str] = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "database_url": "DATABASE_URL",
    "database_replica_url": "CIE_DATABASE_REPLICA_URL",
    "kafka_security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "KAFKA_SSL_CAFILE",
    "kafka_ssl_certfile": "KAFKA_SSL_CERTFILE",
    "kafka_ssl_keyfile": "KAFKA_SSL_KEYFILE",
    "consumer_group": "CIE_CONSUMER_GROUP",
    "dead_letter_suffix": "CIE_DEAD_LETTER_SUFFIX",
    "batch_max_rows": "CIE_BATCH_MAX_ROWS",
    "batch_max_latency_ms": "CIE_BATCH_MAX_LATENCY_MS",
    "batch_backlog_max_rows": "CIE_BATCH_BACKLOG_MAX_ROWS",
    "batch_max_bytes": "CIE_BATCH_MAX_BYTES",
    "batch_backlog_max_bytes": "CIE_BATCH_BACKLOG_MAX_BYTES",
    "drain_deadline_seconds": "CIE_DRAIN_DEADLINE_SECONDS",
    "max_value_bytes": "CIE_MAX_VALUE_BYTES",
    "free_form_max_bytes": "CIE_FREE_FORM_MAX_BYTES",
    "free_form_max_elements": "CIE_FREE_FORM_MAX_ELEMENTS",
    "free_form_max_depth": "CIE_FREE_FORM_MAX_DEPTH",
    "liveness_timeout_seconds": "CIE_LIVENESS_TIMEOUT_SECONDS",
    "fetch_max_bytes": "CIE_FETCH_MAX_BYTES",
    "max_partition_fetch_bytes": "CIE_MAX_PARTITION_FETCH_BYTES",
    "kafka_session_timeout_ms": "CIE_KAFKA_SESSION_TIMEOUT_MS",
    "kafka_heartbeat_interval_ms": "CIE_KAFKA_HEARTBEAT_INTERVAL_MS",
    "kafka_max_poll_interval_ms": "CIE_KAFKA_MAX_POLL_INTERVAL_MS",
    "kafka_group_instance_id": "CIE_KAFKA_GROUP_INSTANCE_ID",
    "producer_max_request_bytes": "CIE_PRODUCER_MAX_REQUEST_BYTES",
    "lag_refresh_seconds": "CIE_LAG_REFRESH_SECONDS",
    "db_pool_size": "CIE_DB_POOL_SIZE",
    "db_command_timeout_seconds": "CIE_DB_COMMAND_TIMEOUT_SECONDS",
    "retry_backoff_first_ms": "CIE_RETRY_BACKOFF_FIRST_MS",
    "retry_backoff_max_ms": "CIE_RETRY_BACKOFF_MAX_MS",
    "clock_skew_tolerance_ms": "CIE_CLOCK_SKEW_TOLERANCE_MS",
    "future_tolerance_seconds": "CIE_FUTURE_TOLERANCE_SECONDS",
    "validator_group": "CIE_VALIDATOR_GROUP",
    "validator_gap_tolerance_seconds": "CIE_VALIDATOR_GAP_TOLERANCE_SECONDS",
    "validator_neutral_band": "CIE_VALIDATOR_NEUTRAL_BAND",
    "validator_max_horizon_minutes": "CIE_VALIDATOR_MAX_HORIZON_MINUTES",
    "validator_sweep_seconds": "CIE_VALIDATOR_SWEEP_SECONDS",
    "validator_sweep_batch": "CIE_VALIDATOR_SWEEP_BATCH",
    "validator_ingest_wait_seconds": "CIE_VALIDATOR_INGEST_WAIT_SECONDS",
    "validator_lookup_past_bars": "CIE_VALIDATOR_LOOKUP_PAST_BARS",
    "rollup_time_zone": "CIE_ROLLUP_TIME_ZONE",
    "rollup_capital_base": "CIE_ROLLUP_CAPITAL_BASE",
    "rollup_periods_per_year": "CIE_ROLLUP_PERIODS_PER_YEAR",
    "rollup_risk_free_rate": "CIE_ROLLUP_RISK_FREE_RATE",
    "rollup_replica_wait_seconds": "CIE_ROLLUP_REPLICA_WAIT_SECONDS",
    "validator_rollup_seconds": "CIE_VALIDATOR_ROLLUP_SECONDS",
    "scheduler_poll_ms": "CIE_SCHEDULER_POLL_MS",
    "scheduler_batch": "CIE_SCHEDULER_BATCH",
    "scheduler_max_failures": "CIE_SCHEDULER_MAX_FAILURES",
    "scheduler_retry_base_seconds": "CIE_SCHEDULER_RETRY_BASE_SECONDS",
    "scheduler_run_timeout_seconds": "CIE_SCHEDULER_RUN_TIMEOUT_SECONDS",
    "ab_evaluate_seconds": "CIE_AB_EVALUATE_SECONDS",
    "ab_significance_level": "CIE_AB_SIGNIFICANCE_LEVEL",
    "ab_min_trades": "CIE_AB_MIN_TRADES",
    "ab_max_duration_factor": "CIE_AB_MAX_DURATION_FACTOR",
    "discord_webhook_url": "CIE_DISCORD_WEBHOOK_URL",
    "notify_poll_ms": "CIE_NOTIFY_POLL_MS",
    "notify_batch": "CIE_NOTIFY_BATCH",
    "notify_timeout_seconds": "CIE_NOTIFY_TIMEOUT_SECONDS",
    "notify_lease_seconds": "CIE_NOTIFY_LEASE_SECONDS",
    "notify_max_age_hours": "CIE_NOTIFY_MAX_AGE_HOURS",
    "notify_retry_base_seconds": "CIE_NOTIFY_RETRY_BASE_SECONDS",
    "notify_retry_max_seconds": "CIE_NOTIFY_RETRY_MAX_SECONDS",
    "archive_url": "CIE_ARCHIVE_URL",
    "archive_horizon_days": "CIE_ARCHIVE_HORIZON_DAYS",
    "archive_batch_rows": "CIE_ARCHIVE_BATCH_ROWS",
    "schema_registry_url": "CIE_SCHEMA_REGISTRY_URL",
    "schema_registry_timeout_seconds": "CIE_SCHEMA_REGISTRY_TIMEOUT_SECONDS",
    "metrics_host": "CIE_METRICS_HOST",
    "metrics_port": "CIE_METRICS_PORT",
    "log_level": "CIE_LOG_LEVEL",
    "log_format": "CIE_LOG_FORMAT",
}


Need = Literal["kafka", "database"]
EVERYTHING: tuple[Need, ...] = ("kafka", "database")
_NEEDED_FIELD: Mapping[Need, str] = {
    "kafka": "kafka_bootstrap_servers", "database": "database_url"}


def load_settings(
    environ: Mapping[str, str] | None = None, *, needs: Sequence[Need] = EVERYTHING
) -> Settings:
    """Build Settings from ``environ`` (default: the process environment).

    ``needs``: what the command talks to; only those connection settings are required (and
    Kafka's security settings checked), so `cie migrate` starts without a broker's password.
    Empty variables count as unset. Raises SettingsError naming the variable at fault.
    """
    source = _with_secret_files(os.environ if environ is None else environ)
    raw: dict[str, object] = {
        field: source[var] for field, var in ENVIRONMENT.items() if source.get(var, "") != ""}
    raw["topic_names"] = _topic_names(source)
    missing = [ENVIRONMENT[_NEEDED_FIELD[need]] for need in needs
               if _NEEDED_FIELD[need] not in raw]
    if missing:
        raise SettingsError(f"{', '.join(missing)}: required but not set")
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_name_variable(str(exc))) from None
    if "kafka" in needs:
        _check_security(settings)
    if not settings.validator_neutral_band.is_finite() or settings.validator_neutral_band < 0:
        raise SettingsError("CIE_VALIDATOR_NEUTRAL_BAND: must be a decimal >= 0")
    _check_rollup(settings)
    if settings.discord_webhook_url and urlsplit(settings.discord_webhook_url).scheme not in (
            "http", "https"):
        raise SettingsError("CIE_DISCORD_WEBHOOK_URL: must be an http(s) URL")
    if settings.schema_registry_url and urlsplit(settings.schema_registry_url).scheme not in (
            "http", "https"):
        raise SettingsError("CIE_SCHEMA_REGISTRY_URL: must be an http(s) URL")
    if settings.notify_retry_max_seconds < settings.notify_retry_base_seconds:
        raise SettingsError(
            "CIE_NOTIFY_RETRY_MAX_SECONDS: must be >= CIE_NOTIFY_RETRY_BASE_SECONDS")
    if not settings.ab_max_duration_factor.is_finite() or settings.ab_max_duration_factor < 1:
        raise SettingsError("CIE_AB_MAX_DURATION_FACTOR: must be a decimal >= 1")
    if not 0 < settings.ab_significance_level < 1:
        raise SettingsError("CIE_AB_SIGNIFICANCE_LEVEL: must be a decimal between 0 and 1")
    if settings.kafka_heartbeat_interval_ms >= settings.kafka_session_timeout_ms:
        raise SettingsError(
            "CIE_KAFKA_HEARTBEAT_INTERVAL_MS: must be below CIE_KAFKA_SESSION_TIMEOUT_MS")
    if settings.retry_backoff_max_ms < settings.retry_backoff_first_ms:
        raise SettingsError("CIE_RETRY_BACKOFF_MAX_MS: must be >= CIE_RETRY_BACKOFF_FIRST_MS")
    return settings


# Secrets may come as files (a Kubernetes Secret mounted as a volume): <NAME>_FILE holds the
# path of a file whose content is the value. DATABASE_PASSWORD[_FILE] puts the password into
# DATABASE_URL, so the rest of the URL can live in a ConfigMap.
SECRET_VARIABLES = ("DATABASE_URL", "CIE_DATABASE_REPLICA_URL", "KAFKA_SASL_PASSWORD",
                    "DATABASE_PASSWORD", "CIE_DISCORD_WEBHOOK_URL")
FILE_SUFFIX = "_FILE"


def _with_secret_files(source: Mapping[str, str]) -> Mapping[str, str]:
    """``source`` with every ``<NAME>_FILE`` read into ``<NAME>`` (and DATABASE_PASSWORD put
    into DATABASE_URL). Errors name the variable and the path, never the content."""
    values = dict(source)
    for name in SECRET_VARIABLES:
        path = values.get(name + FILE_SUFFIX, "")
        if not path:
            continue
        if values.get(name, ""):
            raise SettingsError(f"{name} and {name}{FILE_SUFFIX}: set one of them, not both")
        try:
            with open(path, encoding="utf-8") as secret:
                values[name] = secret.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"{name}{FILE_SUFFIX}: cannot read {path} ({type(exc).__name__})") from None
        if not values[name]:
            raise SettingsError(f"{name}{FILE_SUFFIX}: {path} is empty")
    password = values.pop("DATABASE_PASSWORD", "")
    if password and values.get("DATABASE_URL", ""):
        values["DATABASE_URL"] = _with_password(values["DATABASE_URL"], password)
    return values


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if parts.password is not None:
        raise SettingsError("DATABASE_PASSWORD: DATABASE_URL already has a password")
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        raise SettingsError("DATABASE_PASSWORD: DATABASE_URL names no user to go with it")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _check_rollup(settings: Settings) -> None:
    try:
        zoneinfo.ZoneInfo(settings.rollup_time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError("CIE_ROLLUP_TIME_ZONE: not a known IANA time zone") from None
    if not settings.rollup_capital_base.is_finite() or settings.rollup_capital_base <= 0:
        raise SettingsError("CIE_ROLLUP_CAPITAL_BASE: must be a decimal > 0")
    if not settings.rollup_risk_free_rate.is_finite():
        raise SettingsError("CIE_ROLLUP_RISK_FREE_RATE: must be a finite decimal (0.04 = 4 %)")


def _topic_names(source: Mapping[str, str]) -> dict[str, str]:
    names = {}
    for var, value in source.items():
        if var.startswith(TOPIC_VARIABLE_PREFIX) and value != "":
            if not _TOPIC_NAME.match(value):
                raise SettingsError(f"{var}: not a Kafka topic name ([A-Za-z0-9._-], 1-200)")
            names[var.removeprefix(TOPIC_VARIABLE_PREFIX).lower()] = value
    return names


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def _name_variable(message: str) -> str:
    """Turn msgspec's "... - at `$.field`" into "VARIABLE: ..."."""
    problem, _, where = message.rpartition(" - at `$.")
    field = where.rstrip("`")
    if problem and field in ENVIRONMENT:
        return f"{ENVIRONMENT[field]}: {problem}"
    return message


def _check_security(settings: Settings) -> None:
    uses_sasl = settings.kafka_security_protocol.startswith("SASL_")
    if uses_sasl and not (
        settings.kafka_sasl_mechanism and settings.kafka_sasl_username
        and settings.kafka_sasl_password
    ):
        raise SettingsError(
            "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: all required "
            f"when KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}"
        )
    if not uses_sasl and settings.kafka_sasl_mechanism:
        raise SettingsError(
            "KAFKA_SASL_MECHANISM: set, but KAFKA_SECURITY_PROTOCOL is "
            f"{settings.kafka_security_protocol} (use SASL_PLAINTEXT or SASL_SSL)"
        )
