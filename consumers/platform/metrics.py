"""Every Prometheus metric of the package, in one place. Labels are bounded: topic, table,
reason class, partition (a topic has a fixed, small number of partitions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "cie_messages_consumed_total", "Messages fetched from Kafka", ["topic"])
ROWS_WRITTEN = Counter(
    "cie_rows_written_total", "Events committed to the database", ["topic"])
DEAD_LETTERS = Counter(
    "cie_dead_letters_total", "Messages sent to the dead-letter topic", ["topic", "reason"])
RETRIES = Counter(
    "cie_database_retries_total", "Batch writes retried after a transient database error",
    ["topic"])
REGISTRY_RETRIES = Counter(
    "cie_schema_registry_retries_total",
    "Schema lookups retried because the schema registry was unavailable (ingest paused)")
FLUSHES = Counter(
    "cie_flushes_total", "Batches written (their offsets are committed in the background)",
    ["topic"])
LAST_FLUSH = Gauge(
    "cie_last_flush_timestamp_seconds", "Unix time of the last successful flush", ["topic"])
BATCH_SIZE = Histogram(
    "cie_batch_size_messages", "Messages per flushed batch", ["topic"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000))
FLUSH_SECONDS = Histogram(
    "cie_flush_duration_seconds", "Database write of one batch, retries included",
    ["topic"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
REVOCATIONS_UNCOMMITTED = Counter(
    "cie_revocations_uncommitted_total",
    "Revocations whose buffered batches could not be written within the drain deadline; "
    "their partitions were given up uncommitted (the next owner replays them)")
CONSUMER_LAG = Gauge(
    "cie_consumer_lag_messages", "High watermark minus committed position", ["topic", "partition"])

PREDICTIONS_VALIDATED = Counter(
    "cie_predictions_validated_total", "Predictions whose outcome the validator (re)wrote")
VALIDATION_BACKLOG = Gauge(
    "cie_validation_backlog_predictions", "Predictions past their horizon, still unvalidated")
VALIDATION_LAG = Histogram(
    "cie_validation_lag_seconds", "From a prediction's horizon end to its validation",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
TRADES_UPDATED = Counter(
    "cie_trades_excursions_updated_total", "Trades whose excursions the validator (re)wrote")
VALIDATOR_UNREPRESENTABLE = Counter(
    "cie_validator_unrepresentable_total",
    "Outcomes or excursions too large for their column: skipped (and logged), not written",
    ["kind"])
REPLAY_SKIPPED = Counter(
    "cie_replayed_messages_skipped_total",
    "Messages read again after a crash or a rebalance and not written: the database held them "
    "already (its position for their partition, ingest_positions, was past them)",
    ["topic"])
POSITIONS_MOVED = Counter(
    "cie_positions_moved_total",
    "Batch writes refused because another member had moved a partition's position in the "
    "database (a member that lost its partitions without knowing); read again and retried",
    ["topic"])
UNDECODABLE_SKIPPED = Counter(
    "cie_undecodable_skipped_total",
    "Messages a consumer without a dead-letter topic skipped (the ingest group dead-letters them)",
    ["topic"])

READY = Gauge("cie_ready", "1 while /readyz would answer 200 (checked every 10 seconds)")
COMMAND_LAST_SUCCESS = Gauge(
    "cie_command_last_success_timestamp_seconds",
    "Unix time a scheduled command (rollup, maintain) last succeeded, as it recorded in the "
    "database (refreshed with cie_ready)", ["command"])

SCHEDULER_TASKS = Counter(
    "cie_scheduler_tasks_total",
    "Optimization task runs by what the scheduler did: published, reaped (no report within the "
    "run timeout), retried (after a failure), disabled (too many failures in a row)", ["event"])
SCHEDULER_QUEUE = Gauge(
    "cie_optimization_queue_tasks",
    "Optimization tasks due now (not yet claimed), running, and disabled", ["state"])
SCHEDULER_LAST_PASS = Gauge(
    "cie_scheduler_last_pass_timestamp_seconds", "Unix time the scheduler's last pass ended")
AB_EVALUATIONS = Counter(
    "cie_ab_evaluations_total",
    "A/B test evaluations by the status they left the test in (running, promoted, rejected, "
    "rollback)", ["status"])

NOTIFICATIONS = Counter(
    "cie_notifications_total",
    "Improvement events the notifier handled, by outcome: posted; retry (Discord answered 429 "
    "or 5xx, or was not reached); refused (a 4xx other than 429: kept until a restart); "
    "in_doubt (sent, no answer: not posted again until released); lost_lease; deferred",
    ["outcome"])
NOTIFY_OUTBOX = Gauge(
    "cie_notification_outbox_events",
    "Improvement events not notified: pending (to post or waiting for a retry), refused, "
    "in_doubt (an operator must check the channel, then cie notify --release)", ["state"])
NOTIFIER_LAST_PASS = Gauge(
    "cie_notifier_last_pass_timestamp_seconds", "Unix time the notifier's last pass ended")

OLDEST_ROW = Gauge(
    "cie_oldest_row_timestamp_seconds",
    "Unix time of the oldest row kept (trade_outcomes): older than the retention means rows "
    "wait for cie archive (retention removes only what is archived)", ["table"])
RETENTION = Gauge("cie_retention_seconds", "The table's retention (retention_rules)", ["table"])
TIMESCALEDB_JOB_FAILED = Gauge(
    "cie_timescaledb_job_failed",
    "1 when the last run of a TimescaleDB job (a retention, compression or refresh policy, by "
    "its procedure and relation) failed, 0 when it succeeded or has not run yet", ["job",
    "relation"])
MAINTAIN_JOB_FAILED = Gauge(
    "cie_maintain_job_failed",
    "1 when cie maintain's last foreground run of a TimescaleDB job (by its procedure and "
    "relation) failed, 0 when it succeeded", ["job", "relation"])
ARCHIVE_BUCKET_VERSIONED = Gauge(
    "cie_archive_bucket_versioned",
    "1 when the archive's bucket keeps old versions of its objects (as cie archive last found "
    "it), 0 when a deleted or replaced part could not be recovered", ["location"])
ARCHIVED_ROWS = Gauge("cie_archived_rows", "Rows in S3 as verified Parquet (archive_parts)",
                      ["table"])
ARCHIVED_BYTES = Gauge("cie_archived_bytes", "Bytes of verified Parquet in S3 (archive_parts)",
                       ["table"])
