"""Prometheus for real (Debian's package): the alert rules load, and a server scraping a
running consumer finds the throughput, lag and flush-latency series."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from asyncio.subprocess import Process
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from consumers.contracts.bars import Bar
from tests.support.clock import T0
from tests.support.harness import (
    Ingest,
    consume_serving_metrics,
    eventually,
    ingest_environment,
)
from tests.support.http import get
from tests.support.ports import PortTaken, log_text, on_free_port, taken
from tests.support.stack import REPO, Stack

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
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def test_every_alert_fires_in_its_promtool_unit_test() -> None:
    """deploy/prometheus/alerts.test.yml: input series -> the alerts expected (and the quiet
    cases beside them). Every alert has at least one case in which it fires."""
    tests = REPO / "deploy" / "prometheus" / "alerts.test.yml"
    result = subprocess.run([tool("promtool"), "test", "rules", str(tests)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    firing = {case["alertname"] for group in yaml.safe_load(tests.read_text())["tests"]
              for case in group["alert_rule_test"] if case.get("exp_alerts")}
    assert firing == alert_names()


def test_compose_scrape_config_passes_promtool(tmp_path: Path) -> None:
    config = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", str(ALERTS)))
    result = subprocess.run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def start_prometheus(config: Path, data: Path, log: Path) -> tuple[Process, int]:
    """A Prometheus server on a free loopback port (another one if the first was taken)."""
    async def start(port: int) -> tuple[Process, int]:
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}", stdout=sink, stderr=sink)
        deadline = time.monotonic() + 60
        while (await get(port, "/-/ready"))[0] != 200:
            if proc.returncode is not None:
                if taken(log_text(log)):
                    raise PortTaken(port)
                raise AssertionError(f"prometheus exited: {log_text(log)[-2000:]}")
            assert time.monotonic() < deadline, "prometheus not ready"
            await asyncio.sleep(0.2)
        return proc, port

    return await on_free_port(start)


async def test_prometheus_scrapes_throughput_lag_and_flush_latency(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    """The values Prometheus stores are the consumer's real counts: 30 bars consumed and
    written in at least one flush, no lag left, ready."""
    environment = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(environment)
    await ingest.open()
    prometheus: Process | None = None
    try:
        async with consume_serving_metrics(environment, tmp_path / "consume.log") as (_, port):
            (tmp_path / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: ['{ALERTS}']\n"
                "scrape_configs:\n"
                f"  - {{job_name: cie, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n")
            prometheus, web_port = await start_prometheus(
                tmp_path / "prometheus.yml", tmp_path / "data", tmp_path / "prometheus.log")
            await ingest.send([Bar(symbol="PROM", timestamp=T0 + timedelta(minutes=m),
                                   open=Decimal(1), high=Decimal(1), low=Decimal(1),
                                   close=Decimal(1), volume=m) for m in range(30)])
            await ingest.drained("bars", 30)
            bars = ingest.topic("bars")

            async def value(query: str) -> float | None:
                status, body = await get(web_port, f"/api/v1/query?query={quote(query)}")
                result = json.loads(body)["data"]["result"] if status == 200 else []
                return float(result[0]["value"][1]) if result else None

            expected = {
                f'sum(cie_messages_consumed_total{{topic="{bars}"}})': 30.0,
                f'sum(cie_rows_written_total{{topic="{bars}"}})': 30.0,
                f'sum(cie_consumer_lag_messages{{topic="{bars}"}})': 0.0,
                # flushes: at least one (how many it took may vary)
                f'sum(cie_flush_duration_seconds_count{{topic="{bars}"}}) > bool 0': 1.0,
                "cie_ready": 1.0,
            }
            for query, want in expected.items():
                assert await eventually(partial(value, query), want, timeout=60) == want, query
            _, body = await get(web_port, "/api/v1/rules")
            names = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
            assert names == alert_names()
    finally:
        if prometheus is not None:
            prometheus.terminate()
            await asyncio.wait_for(prometheus.wait(), timeout=30)
        await ingest.close()
