"""Settings from the environment: typed, validated, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.errors import SettingsError
from consumers.platform.settings import ENVIRONMENT, load_settings

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
    "DATABASE_URL": "postgresql://ingest:s3cret@127.0.0.1:5432/analytics",
}


def test_defaults_and_conversion() -> None:
    settings = load_settings({**BASE, "CIE_BATCH_MAX_ROWS": "250", "CIE_METRICS_PORT": "9200"})
    assert settings.batch_max_rows == 250
    assert settings.metrics_port == 9200
    assert settings.batch_max_latency_ms == 100
    assert settings.consumer_group == "cie-ingest"
    assert settings.kafka_security_protocol == "PLAINTEXT"


def test_missing_required_variables_are_named() -> None:
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL: required"):
        load_settings({})


def test_empty_variable_counts_as_unset() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL: required"):
        load_settings({**BASE, "DATABASE_URL": ""})


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("CIE_BATCH_MAX_ROWS", "0", "Expected `int` >= 1"),
    ("CIE_BATCH_MAX_ROWS", "many", "Expected `int`"),
    ("CIE_METRICS_PORT", "70000", "<= 65535"),
    ("CIE_METRICS_PORT", "-1", ">= 0"),
    ("CIE_LOG_LEVEL", "LOUD", "Invalid enum value 'LOUD'"),
    ("DATABASE_URL", "mysql://x", "Expected `str` matching regex"),
    ("KAFKA_SECURITY_PROTOCOL", "TLS", "Invalid enum value 'TLS'"),
])
def test_bad_values_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, variable: value})
    assert str(caught.value).startswith(f"{variable}: ")
    assert problem in str(caught.value)


def test_sasl_needs_its_credentials() -> None:
    with pytest.raises(SettingsError, match="KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and "
                                            "KAFKA_SASL_PASSWORD: all required"):
        load_settings({**BASE, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                       "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    settings = load_settings({**BASE, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                              "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                              "KAFKA_SASL_USERNAME": "ingest", "KAFKA_SASL_PASSWORD": "hunter2"})
    assert settings.kafka_sasl_username == "ingest"


def test_secrets_are_never_shown() -> None:
    settings = load_settings({**BASE, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                              "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "ingest",
                              "KAFKA_SASL_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings) and "s3cret" not in str(settings)
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "DATABASE_URL": "mysql://root:topsecret@db"})
    assert "topsecret" not in str(caught.value)


def test_settings_are_frozen() -> None:
    settings = load_settings(BASE)
    with pytest.raises(AttributeError):
        settings.batch_max_rows = 5  # type: ignore[misc]


def test_every_field_has_one_variable() -> None:
    import msgspec

    from consumers.platform.settings import Settings

    # topic names come from the CIE_TOPIC_<NAME> family (consumers/topics.py)
    assert set(ENVIRONMENT) | {"topic_names"} == {f.name for f in msgspec.structs.fields(Settings)}
    assert len(set(ENVIRONMENT.values())) == len(ENVIRONMENT)


def test_topic_names_come_from_the_topic_table_and_its_variables() -> None:
    from consumers import topics

    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db"}
    settings = load_settings({**base, "CIE_TOPIC_BARS": "md.bars.v2"})
    assert [t.kafka_name(settings) for t in topics.TOPICS] == [
        "fills", "predictions", "md.bars.v2", "improvement-events"]
    assert topics.BY_NAME["bars"].dead_letter_name(settings) == "md.bars.v2.dlq"
    assert topics.unknown_names(load_settings({**base, "CIE_TOPIC_BRAS": "x"})) == ["CIE_TOPIC_BRAS"]
    with pytest.raises(SettingsError, match="CIE_TOPIC_BARS"):
        load_settings({**base, "CIE_TOPIC_BARS": "not a topic"})


def test_consume_and_validate_default_to_different_metrics_ports() -> None:
    """Started side by side with defaults, the second used to die on 'address in use'."""
    from consumers.cli.parser import build_parser
    from consumers.platform.service import metrics_port

    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db"}
    defaults = load_settings(base)
    assert (metrics_port(defaults, "consume"), metrics_port(defaults, "validate")) == (9108, 9109)
    chosen = load_settings({**base, "CIE_METRICS_PORT": "9200"})
    assert metrics_port(chosen, "validate") == 9200
    assert metrics_port(load_settings({**base, "CIE_METRICS_PORT": "0"}), "consume") == 0
    help_text = build_parser().format_help()
    assert "9108" in help_text and "9109" in help_text


def test_each_command_asks_only_for_what_it_uses() -> None:
    """The prod overlay's jobs (migrate, maintain, rollup) have no Kafka password: they must
    start without one, while consume still refuses to."""
    from consumers.cli.main import needs_of
    from consumers.cli.parser import build_parser

    db_only = {"DATABASE_URL": "postgresql://u@h/db", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    for command in (["migrate"], ["maintain"], ["rollup"], ["validate", "--once"]):
        load_settings(db_only, needs=needs_of(build_parser().parse_args(command)))
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS"):
        load_settings(db_only, needs=needs_of(build_parser().parse_args(["consume"])))
    with pytest.raises(SettingsError, match="KAFKA_SASL_MECHANISM"):
        load_settings({**db_only, "KAFKA_BOOTSTRAP_SERVERS": "k:9093"},
                      needs=needs_of(build_parser().parse_args(["validate"])))
    assert needs_of(build_parser().parse_args(["contracts"])) == ()


def test_operator_settings_have_todays_defaults_and_are_checked() -> None:
    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://u@h/db"}
    defaults = load_settings(base)
    assert (defaults.db_pool_size, defaults.db_command_timeout_seconds,
            defaults.kafka_session_timeout_ms, defaults.kafka_max_poll_interval_ms,
            defaults.kafka_group_instance_id, defaults.producer_max_request_bytes,
            defaults.lag_refresh_seconds) == (4, 60, 10_000, 300_000, None, 1_048_576, 15)
    chosen = load_settings({**base, "CIE_DB_POOL_SIZE": "8", "CIE_KAFKA_GROUP_INSTANCE_ID":
                            "cie-ingest-2", "CIE_PRODUCER_MAX_REQUEST_BYTES": "4194304"})
    assert (chosen.db_pool_size, chosen.kafka_group_instance_id,
            chosen.producer_max_request_bytes) == (8, "cie-ingest-2", 4_194_304)
    with pytest.raises(SettingsError, match="CIE_KAFKA_HEARTBEAT_INTERVAL_MS"):
        load_settings({**base, "CIE_KAFKA_SESSION_TIMEOUT_MS": "3000"})
    with pytest.raises(SettingsError, match="CIE_PRODUCER_MAX_REQUEST_BYTES"):
        load_settings({**base, "CIE_PRODUCER_MAX_REQUEST_BYTES": "1000"})
    with pytest.raises(SettingsError, match="CIE_DB_POOL_SIZE"):
        load_settings({**base, "CIE_DB_POOL_SIZE": "0"})


def test_secrets_can_come_from_files_and_never_show(tmp_path: Path) -> None:
    """The Kubernetes Secret volume convention: <NAME>_FILE holds the path of the value."""
    (tmp_path / "url").write_text("postgresql://ingest:s3cr3t-url@db:5432/cie\n")
    (tmp_path / "kafka").write_text("s3cr3t-kafka\n")
    (tmp_path / "password").write_text("p@ss/w:rd s3cr3t\n")
    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "ingest"}
    settings = load_settings({**base, "DATABASE_URL_FILE": str(tmp_path / "url"),
                              "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka")})
    assert settings.database_url == "postgresql://ingest:s3cr3t-url@db:5432/cie"
    assert settings.kafka_sasl_password == "s3cr3t-kafka"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)

    # the URL in a ConfigMap, only the password in a Secret (quoted into the URL)
    split = load_settings({**base, "KAFKA_SASL_PASSWORD": "x",
                           "DATABASE_URL": "postgresql://ingest@db:5432/cie",
                           "DATABASE_PASSWORD_FILE": str(tmp_path / "password")})
    assert split.database_url == "postgresql://ingest:p%40ss%2Fw%3Ard%20s3cr3t@db:5432/cie"

    errors = {
        "both": {"DATABASE_URL": "postgresql://a@b/c", "DATABASE_URL_FILE": str(tmp_path / "url")},
        "missing": {"DATABASE_URL_FILE": str(tmp_path / "absent")},
        "empty": {"DATABASE_URL_FILE": str(tmp_path / "empty")},
        "two passwords": {"DATABASE_URL": "postgresql://a:other@b/c",
                          "DATABASE_PASSWORD_FILE": str(tmp_path / "password")},
    }
    (tmp_path / "empty").write_text("\n")
    for case, extra in errors.items():
        with pytest.raises(SettingsError) as caught:
            load_settings({**base, "KAFKA_SASL_PASSWORD": "x", **extra})
        assert "s3cr3t" not in str(caught.value) and "other" not in str(caught.value), case
        assert "DATABASE_" in str(caught.value), case


def test_the_discord_webhook_is_a_secret_from_a_file_and_must_be_http(tmp_path: Path) -> None:
    url = "https://discord.com/api/webhooks/1/t0ken-value"
    (tmp_path / "webhook").write_text(url + "\n")
    settings = load_settings({**BASE, "CIE_DISCORD_WEBHOOK_URL_FILE": str(tmp_path / "webhook")})
    assert settings.discord_webhook_url == url
    assert "t0ken-value" not in repr(settings) and "t0ken-value" not in str(settings)
    with pytest.raises(SettingsError, match="CIE_DISCORD_WEBHOOK_URL: must be an http"):
        load_settings({**BASE, "CIE_DISCORD_WEBHOOK_URL": "ftp://example/hook"})
    with pytest.raises(SettingsError, match="CIE_NOTIFY_RETRY_MAX_SECONDS"):
        load_settings({**BASE, "CIE_NOTIFY_RETRY_BASE_SECONDS": "10",
                       "CIE_NOTIFY_RETRY_MAX_SECONDS": "5"})


async def test_the_configuration_reference_is_what_cie_settings_prints() -> None:
    """docs/configuration.md is generated: every setting has a meaning, and the file is the
    command's output (regenerate: cie settings > docs/configuration.md)."""
    from consumers.cli.reference import MEANINGS
    from tests.support.cie import run_cie
    from tests.support.stack import REPO

    assert list(MEANINGS) == list(ENVIRONMENT)  # the order the Settings fields are in
    code, printed = await run_cie("settings", env={})  # the real command, in a process
    assert code == 0, printed
    assert all(f"| `{variable}` |" in printed for variable in ENVIRONMENT.values())
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == printed, (
        "docs/configuration.md is out of date: cie settings > docs/configuration.md")
