"""docker-compose.yml cannot run here (no Docker engine); it must parse and speak our settings."""

from __future__ import annotations

import msgspec
import yaml

from consumers.platform.settings import ENVIRONMENT, FILE_SUFFIX, SECRET_VARIABLES, Settings
from tests.support.stack import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
OURS = {"migrate", "consume", "validate", "schedule", "notify", "demo"}
REQUIRED = {ENVIRONMENT[f.name] for f in msgspec.structs.fields(Settings) if f.required}


def test_compose_has_the_whole_stack() -> None:
    assert {"kafka", "timescaledb", "migrate", "consume", "prometheus"} <= set(COMPOSE["services"])


def test_our_services_set_only_variables_the_code_reads_and_all_it_needs() -> None:
    known = {*ENVIRONMENT.values(), "DATABASE_PASSWORD",
             *(f"{name}{FILE_SUFFIX}" for name in SECRET_VARIABLES)}
    for name in OURS:
        environment = COMPOSE["services"][name]["environment"]
        assert set(environment) <= known, (name, set(environment) - known)
        assert set(environment) >= REQUIRED, name


def test_our_services_run_commands_the_cli_has() -> None:
    from consumers.cli.parser import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name in OURS:
        assert COMPOSE["services"][name]["command"][0] in commands, name


def test_prometheus_scrapes_the_consumer_metrics_port() -> None:
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    port = COMPOSE["services"]["consume"]["environment"]["CIE_METRICS_PORT"]
    assert targets == [f"consume:{port}"]


def test_grafana_dashboard_queries_only_metrics_the_code_exports() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    import consumers.platform.metrics  # noqa: F401 - registers every metric

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    exported = {
        family.name + suffix for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, [""])
    }
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/cie.json").read_text())
    queried = {
        name for panel in dashboard["panels"] for target in panel["targets"]
        for name in re.findall(r"\b(cie_[a-z_]+)", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
    grafana = COMPOSE["services"]["grafana"]
    assert any("provisioning" in volume for volume in grafana["volumes"])
    prometheus_mounts = " ".join(COMPOSE["services"]["prometheus"]["volumes"])
    assert "alerts.yml" in prometheus_mounts


LOGINS = {"consume": "ingest", "validate": "validator", "schedule": "scheduler",
          "notify": "notifier"}


def test_each_component_logs_in_as_itself_with_a_password_from_a_file() -> None:
    """No password in the file, no component as the superuser: each reads its own login's
    password from the secrets volume, made at the first start (deploy/compose/secrets.sh)."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD:" not in text and "postgres:postgres@" not in text
    services = COMPOSE["services"]
    for name, login in LOGINS.items():
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith(f"postgresql://{login}@"), name
        assert environment["DATABASE_PASSWORD_FILE"] == f"/secrets/{login}", name
    assert services["timescaledb"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/secrets/postgres"
    made = (REPO / "deploy/compose/secrets.sh").read_text()
    granted = (REPO / "deploy/compose/logins.sh").read_text()
    for login in LOGINS.values():
        assert login in made and f" TO {login};" in granted and f":'{login}'" in granted
    assert "\\set %s" in granted  # passwords reach psql on its input, never as arguments


def test_every_published_port_is_on_loopback_and_grafana_asks_who_you_are() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    grafana = COMPOSE["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/secrets/")


def test_the_notifier_reaches_the_webhook_sink() -> None:
    """The sink listens on every address of its container (its own loopback would be out of
    the notifier's reach), and the notifier posts to it by its service name."""
    sink = COMPOSE["services"]["webhook-sink"]["command"]
    assert sink[sink.index("--host") + 1] == "0.0.0.0"
    url = COMPOSE["services"]["notify"]["environment"]["CIE_DISCORD_WEBHOOK_URL"]
    assert url.startswith(f"http://webhook-sink:{sink[sink.index('--port') + 1]}/")
