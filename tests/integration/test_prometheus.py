"""Prometheus for real (Debian's package): the alert rules load, and a server scraping a
running consumer finds the throughput, lag and flush-latency series."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from consumers.contracts.bars import Bar
from tests.conftest import REPO, Stack
from tests.integration.harness import Ingest, consume_subprocess, eventually, ingest_environment
from tests.integration.test_health import free_port, get

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: deploy/local/stack.sh up installs Debian's prometheus")
    return path


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_compose_scrape_config_passes_promtool(tmp_path: Path) -> None:
    config = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", str(ALERTS)))
    result = subprocess.run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_scrapes_throughput_lag_and_flush_latency(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    metrics_port, web_port = free_port(), free_port()
    environment = ingest_environment(stack.kafka, plain_db, CIE_METRICS_HOST="127.0.0.1",
                                     CIE_METRICS_PORT=str(metrics_port))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        f"  - {{job_name: cie, static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]}}\n")
    ingest = Ingest(environment)
    await ingest.open()
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = await asyncio.create_subprocess_exec(
        tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web_port}",
        stdout=log, stderr=log)
    try:
        async with consume_subprocess(environment, tmp_path / "consume.log"):
            await ingest.send([Bar(symbol="PROM", timestamp=f"2026-03-02T14:{m:02d}:00Z",  # type: ignore[arg-type]
                                   open=Decimal(1), high=Decimal(1), low=Decimal(1),
                                   close=Decimal(1), volume=m) for m in range(30)])

            async def found(query: str) -> bool:
                status, body = await get(web_port, f"/api/v1/query?query={query}")
                return status == 200 and len(json.loads(body)["data"]["result"]) > 0

            for query in ("cie_messages_consumed_total", "cie_consumer_lag_messages",
                          "cie_flush_duration_seconds_bucket", "cie_ready"):
                assert await eventually(partial(found, query), True, timeout=60), query
            _, body = await get(web_port, "/api/v1/rules")
            names = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
            assert "CieDeadLettersArriving" in names and len(names) == 5
    finally:
        prometheus.terminate()
        await asyncio.wait_for(prometheus.wait(), timeout=30)
        log.close()
        await ingest.close()
