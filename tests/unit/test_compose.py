"""docker-compose.yml cannot run here (no Docker engine); it must parse and speak our settings."""

from __future__ import annotations

import msgspec
import yaml

from consumers.platform.settings import ENVIRONMENT, Settings
from tests.support.stack import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
OURS = {"migrate", "consume", "validate", "schedule", "notify", "demo"}
REQUIRED = {ENVIRONMENT[f.name] for f in msgspec.structs.fields(Settings) if f.required}


def test_compose_has_the_whole_stack() -> None:
    assert {"kafka", "timescaledb", "migrate", "consume", "prometheus"} <= set(COMPOSE["services"])


def test_our_services_set_only_variables_the_code_reads_and_all_it_needs() -> None:
    known = set(ENVIRONMENT.values())
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
