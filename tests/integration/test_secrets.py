"""Secrets given as files (<NAME>_FILE) never show: not in a log line, an error, /metrics,
including when connecting fails (asyncpg and aiokafka put addresses in their errors)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from consumers.contracts.bars import Bar
from tests.support.cie import run_cie
from tests.support.clock import T0
from tests.support.harness import (
    Ingest,
    consume_serving_metrics,
    consume_subprocess,
    eventually,
    ingest_environment,
)
from tests.support.http import get
from tests.support.ports import free_port, log_text
from tests.support.stack import Stack

DB_SECRET = "S3cr3t-db-pw"
KAFKA_SECRET = "S3cr3t-kafka-pw"


def secret_files(tmp_path: Path, database_url: str) -> dict[str, str]:
    """DATABASE_URL (with DB_SECRET as its password) and a Kafka password, as files."""
    tmp_path.mkdir(exist_ok=True)
    parts = urlsplit(database_url)
    user_host = parts.netloc.rpartition("@")
    with_password = parts._replace(netloc=f"{user_host[0] or 'postgres'}:{DB_SECRET}@"
                                          f"{user_host[2]}").geturl()
    (tmp_path / "url").write_text(with_password + "\n")
    (tmp_path / "kafka").write_text(KAFKA_SECRET + "\n")
    return {"DATABASE_URL_FILE": str(tmp_path / "url"),
            "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka")}


async def test_secrets_from_files_never_show_even_when_connecting_fails(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/cie"
    failing = {**secret_files(tmp_path / "a", unreachable), "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
               "CIE_LOG_FORMAT": "json"}
    outputs = []
    for command in (["migrate"], ["rollup"], ["maintain"], ["validate", "--once"]):
        code, out = await run_cie(*command, env=failing)
        assert code == 1, out  # the database is not there: one line saying so
        [line] = out.strip().splitlines()
        assert "command.failed" in line and "Connect call failed" in line
        outputs.append(out)
    # SASL against a listener that speaks none: the handshake fails
    code, out = await run_cie("topics", "ensure", env={
        **failing, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "ingest"})
    assert code == 1 and "Traceback" not in out, out
    outputs.append(out)
    # a long-running consumer waits for the database, logging why
    log = tmp_path / "waiting.log"
    consumer = {**ingest_environment(stack.kafka, unreachable), **failing}
    del consumer["DATABASE_URL"]  # it comes from the file
    async with consume_subprocess(consumer, log) as proc:
        async def waiting() -> bool:
            return "schema.check_waiting" in log_text(log)
        assert await eventually(waiting, True) is True and proc.returncode is None
    outputs.append(log_text(log))
    for out in outputs:
        assert DB_SECRET not in out and KAFKA_SECRET not in out, out[-2000:]
        assert out.strip(), "every failure says something"


async def test_a_consumer_configured_from_files_shows_no_secret_at_metrics(
    stack: Stack, plain_db: str, tmp_path: Path
) -> None:
    environment = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(environment)  # produces with the plain settings
    await ingest.open()
    try:
        from_files = {key: value for key, value in environment.items() if key != "DATABASE_URL"}
        from_files.update(secret_files(tmp_path / "s", plain_db))  # the stack trusts loopback
        async with consume_serving_metrics(from_files, tmp_path / "consume.log") as (_, port):
            await ingest.send([Bar(symbol="SECR", timestamp=T0, open=Decimal(1), high=Decimal(1),
                                   low=Decimal(1), close=Decimal(1), volume=1)])
            await ingest.drained("bars", 1)  # it works with the URL from the file
            status, metrics = await get(port, "/metrics")
            assert status == 200 and "cie_ready" in metrics
            assert DB_SECRET not in metrics and KAFKA_SECRET not in metrics
            for path in ("/readyz", "/healthz", "/nothing"):
                assert DB_SECRET not in (await get(port, path))[1]
        assert DB_SECRET not in log_text(tmp_path / "consume.log")
    finally:
        await ingest.close()
