"""The secured stack for real: a broker that speaks only SASL_SSL (SCRAM-SHA-512) with ACLs
and a PostgreSQL that takes only scram-sha-256 over TLS, both set up by deploy/local/secure.sh
as `stack.sh up --secure` sets up the stack's own servers.

Each component runs as its own user: `cie migrate` as the database owner, `cie consume` as
`ingest`, `cie validate` as `validator`, `cie rollup` as `rollup`, the checks as the
read-only `analyst`, every connection verifying the server's certificate (verify-full).
What is misconfigured (a wrong password, an unknown CA, a certificate for another host, a
missing ACL) ends the command at start with one line that names it, never the secret, never
a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from webhook_sink import FakeDiscord

from consumers.topics import TOPICS
from tests.support.cie import cie_environment, run_cie
from tests.support.harness import eventually
from tests.support.private_kafka import PrivateKafka, secure_sh
from tests.support.private_postgres import PrivatePostgres, pg_bin, timescaledb_installed
from tests.support.stack import Stack

SOURCE_TOPICS = [topic.default for topic in TOPICS]


@dataclass
class Secured:
    kafka: PrivateKafka
    postgres: PrivatePostgres
    tls: Path

    async def migrate(self) -> None:
        """`cie migrate` as the owner, who is no superuser: on the plain path it says so (it
        cannot tell whether TimescaleDB, installed on this machine, would be preloaded)."""
        plain = [] if self.postgres.timescaledb else ["--without-timescaledb"]
        code, out = await cie({"DATABASE_URL": self.database_url("cie_owner")}, "migrate",
                              *plain)
        assert code == 0, out

    def kafka_env(self, user: str, **options: Path) -> dict[str, str]:
        return self.kafka.user_env(user, **options)

    def database_url(self, user: str, *, ca: Path | None = None) -> str:
        return self.postgres.user_url(user, self.tls, ca=ca)

    def secrets(self) -> list[str]:
        return [path.read_text().strip() for path in (self.tls / "passwords").iterdir()]


class CommandLines:
    """Every command line on the machine while ``watching`` (read from /proc/*/cmdline every
    few milliseconds, as anyone on the machine may): what `ps` would have shown."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                for path in Path("/proc").glob("[0-9]*/cmdline"):
                    with contextlib.suppress(OSError):
                        if line := path.read_bytes():
                            self.seen.add(line.replace(b"\0", b" ").decode(errors="replace"))
                stop.wait(0.005)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def command_lines() -> CommandLines:
    return CommandLines()


@pytest.fixture(scope="module")
async def secured_kafka(tmp_path_factory: pytest.TempPathFactory,
                        command_lines: CommandLines) -> AsyncIterator[tuple[PrivateKafka, Path]]:
    tls = tmp_path_factory.mktemp("secured") / "tls"
    secure_sh("certs", str(tls))
    kafka = PrivateKafka(tls=tls)
    try:
        with command_lines.watching():  # the SCRAM users made, the ACLs granted
            await kafka.start()
        yield kafka, tls
    finally:
        await kafka.destroy()


@pytest.fixture(scope="module", params=["plain", "timescaledb"])
async def secured(request: pytest.FixtureRequest, stack: Stack,
                  secured_kafka: tuple[PrivateKafka, Path],
                  command_lines: CommandLines) -> AsyncIterator[Secured]:
    if request.param == "timescaledb" and not timescaledb_installed(pg_bin(tls=True)):
        pytest.skip("TimescaleDB is not installed in the PostgreSQL with TLS (Debian's): "
                    "TimescaleDB path not tested")
    kafka, tls = secured_kafka
    # TLS needs a server built with OpenSSL: Debian's, not the stack's (deploy/platform.env)
    postgres = PrivatePostgres(timescaledb=request.param == "timescaledb", tls=True)
    try:
        with command_lines.watching():  # the logins made with their passwords
            await postgres.init()
            await postgres.start()
            await postgres.secure(tls)
        yield Secured(kafka, postgres, tls)
    finally:
        await postgres.destroy()


async def cie(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    return await run_cie(*args, env={"CIE_LOG_FORMAT": "json", **env}, timeout=timeout)


@contextlib.asynccontextmanager
async def running(env: dict[str, str], command: str, log: Path) -> AsyncIterator[None]:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", command,
            env=cie_environment({"CIE_LOG_FORMAT": "json", "CIE_METRICS_PORT": "0", **env}),
            stdout=sink, stderr=sink)
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=60)


async def behind(kafka: PrivateKafka, group: str, topics: list[str]) -> int:
    """Messages of ``topics`` the group has not committed yet (asked of the broker as admin)."""
    partitions = await partitions_of(kafka, topics)
    admin = AIOKafkaAdminClient(**kafka.client_options())
    reader = AIOKafkaConsumer(**kafka.client_options())
    await admin.start()
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
        return sum(end - (committed[tp].offset if tp in committed else 0)
                   for tp, end in ends.items())
    finally:
        await reader.stop()
        await admin.close()


async def committed_records(kafka: PrivateKafka, topic: str) -> int:
    """How many committed records ``topic`` holds (transaction markers take offsets too)."""
    reader = AIOKafkaConsumer(**kafka.client_options(), isolation_level="read_committed",
                              auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    try:
        partitions = await partitions_of(kafka, [topic])
        assert partitions, topic
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        count = 0
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            if all([await reader.position(tp) >= end for tp, end in ends.items()]):
                break
            batches = await reader.getmany(timeout_ms=1000)
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await reader.stop()


async def partitions_of(kafka: PrivateKafka, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        return [TopicPartition(described["topic"], partition["partition"])
                for described in await admin.describe_topics(topics)
                for partition in described["partitions"]]
    finally:
        await admin.close()


async def wait_caught_up(kafka: PrivateKafka, group: str, topics: list[str],
                         timeout: float = 180) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := await behind(kafka, group, topics)) and \
            asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(1)
    assert left == 0, f"{group}: {left} messages not committed after {timeout}s"


def failure(out: str) -> dict[str, Any]:
    """The single error line a command that could not start printed."""
    errors = [json.loads(line) for line in out.splitlines()
              if line.startswith("{") and json.loads(line).get("level") == "error"]
    assert len(errors) == 1, out[-3000:]
    line: dict[str, Any] = errors[0]
    return line


async def test_the_owner_migrates_onto_the_path_the_server_offers(secured: Secured) -> None:
    """The owner is no superuser. Where a superuser created TimescaleDB, it migrates onto it;
    where TimescaleDB is installed on the machine but not in this database, it cannot read
    shared_preload_libraries to tell whether it could be: it says so instead of guessing.
    (First in the module: the database is not migrated yet.)"""
    code, out = await cie({"DATABASE_URL": secured.database_url("cie_owner")}, "migrate")
    analyst = await asyncpg.connect(secured.database_url("analyst"))
    try:
        available = await analyst.fetchval(
            "SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'timescaledb'")
        installed = await analyst.fetchval(
            "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'timescaledb'")
        hypertables = await analyst.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables") if installed else 0
    finally:
        await analyst.close()
    if secured.postgres.timescaledb:
        assert code == 0 and hypertables >= 4, out
    elif available:
        line = failure(out)
        assert code == 1 and "--without-timescaledb" in line["error"], line
    else:
        assert code == 0 and not installed, out


async def test_each_component_runs_as_its_own_user_over_verified_tls(
    secured: Secured, tmp_path: Path
) -> None:
    await secured.migrate()
    code, out = await cie(secured.kafka_env("admin"), "topics", "ensure", "--partitions", "2")
    assert code == 0, out
    ingest = {**secured.kafka_env("ingest"), "DATABASE_URL": secured.database_url("ingest")}
    # the sweep every second: a bar the validator reads before the ingest group stored the
    # predictions it settles is made good by the sweep, not the next bar (a busy machine)
    validator = {**secured.kafka_env("validator"),
                 "DATABASE_URL": secured.database_url("validator"),
                 "CIE_VALIDATOR_SWEEP_SECONDS": "1"}
    async with running(ingest, "consume", tmp_path / "consume.log"), \
            running(validator, "validate", tmp_path / "validate.log"):
        dead_before = await committed_records(secured.kafka, "bars.dlq")  # the other path's
        # in MessagePack: every other demo run sends JSON, and both consumer groups decode it
        code, out = await cie(secured.kafka_env("admin"), "demo", "--minutes", "40",
                              "--symbols", "AAPL,MSFT", "--encoding", "msgpack")
        assert code == 0, out
        sent = next(json.loads(line) for line in out.splitlines() if "demo.done" in line)
        await wait_caught_up(secured.kafka, "cie-ingest", SOURCE_TOPICS)
        await wait_caught_up(secured.kafka, "cie-validator", ["bars", "fills"])
        owner = await asyncpg.connect(secured.database_url("cie_owner"))
        try:  # validated by the live path or the sweep: bounded wait, then asserted below
            await eventually(lambda: owner.fetchval(
                "SELECT count(*) > 0 FROM model_predictions WHERE actual_direction IS NOT NULL"),
                True, timeout=60)
        finally:
            await owner.close()

    code, out = await cie({"DATABASE_URL": secured.database_url("rollup")}, "rollup")
    assert code == 0, out  # its own login, in cie_rollup only

    analyst = await asyncpg.connect(secured.database_url("analyst"))
    try:
        assert await analyst.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await analyst.fetchval("SELECT count(*) FROM strategy_performance") > 0
        counts = {table: await analyst.fetchval(f"SELECT count(*) FROM {table}")
                  for table in ("market_conditions", "model_predictions", "trade_fills")}
        validated = await analyst.fetchval(
            "SELECT count(*) FROM model_predictions WHERE actual_direction IS NOT NULL")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await analyst.execute("DELETE FROM market_conditions")
    finally:
        await analyst.close()
    assert counts == {"market_conditions": sent["Bar"], "model_predictions": sent["Prediction"],
                      "trade_fills": sent["Fill"]}, (counts, sent)
    assert 0 < validated <= counts["model_predictions"]
    # the demo's malformed bars went to the dead-letter topic, in the ingest's transactions
    assert await committed_records(secured.kafka, "bars.dlq") - dead_before == \
        sent["malformed"] > 0
    logs = (tmp_path / "consume.log").read_text() + (tmp_path / "validate.log").read_text()
    assert not any(secret in logs for secret in secured.secrets())


async def test_a_wrong_kafka_password_ends_the_command_with_one_line(
    secured: Secured, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    env = {**secured.kafka_env("ingest", password_file=wrong),
           "DATABASE_URL": secured.database_url("ingest")}
    code, out = await cie(env, "consume")
    line = failure(out)
    assert code == 1 and "authentication" in line["error"].lower(), line
    assert "not-the-password" not in out


async def test_a_wrong_database_password_ends_the_command_with_one_line(
    secured: Secured, tmp_path: Path
) -> None:
    url = secured.database_url("ingest")
    password = (secured.tls / "passwords" / "ingest").read_text().strip()
    wrong = url.replace(f":{password}@", ":not-the-password@")
    code, out = await cie({**secured.kafka_env("ingest"), "DATABASE_URL": wrong}, "consume")
    line = failure(out)
    assert code == 1 and "password authentication failed" in line["error"], line
    assert "not-the-password" not in out and password not in out


@pytest.fixture(scope="module")
def unknown_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of another stack: the servers' certificates are not signed by it."""
    other = tmp_path_factory.mktemp("other") / "tls"
    secure_sh("certs", str(other))
    return other / "ca.crt"


async def test_an_unknown_ca_is_refused_on_kafka_and_on_postgres(
    secured: Secured, unknown_ca: Path
) -> None:
    env = {**secured.kafka_env("ingest", ca=unknown_ca),
           "DATABASE_URL": secured.database_url("ingest")}
    code, out = await cie(env, "consume")
    line = failure(out)
    assert code == 1 and "certificate verify failed" in line["error"], line

    env = {**secured.kafka_env("ingest"),
           "DATABASE_URL": secured.database_url("ingest", ca=unknown_ca)}
    code, out = await cie(env, "consume")
    line = failure(out)
    assert code == 1 and "certificate verify failed" in line["error"], line


async def test_a_certificate_for_another_host_is_refused(
    secured: Secured, tmp_path: Path
) -> None:
    """The server presents a certificate of the right CA, for another name: verify-full says no
    (verify-ca would have let it through)."""
    wrong = tmp_path / "wrong-host"
    shutil.copytree(secured.tls, wrong)
    for name in ("postgres.crt", "postgres.key", "postgres.pem"):
        (wrong / name).unlink()
    secure_sh("certificate", str(wrong), "postgres", "DNS:db.elsewhere.example")
    data = secured.postgres.data
    original = {name: (data / name).read_bytes() for name in ("server.crt", "server.key")}
    await secured.postgres.install_certificate(wrong / "postgres.crt", wrong / "postgres.key")
    try:
        code, out = await cie({"DATABASE_URL": secured.database_url("ingest")}, "rollup")
        line = failure(out)
        assert code == 1 and "not valid for '127.0.0.1'" in line["error"], line
    finally:
        for name, content in original.items():
            (data / name).write_bytes(content)
        await secured.postgres.reload()
    await secured.migrate()  # the right certificate is accepted again


async def test_a_missing_acl_ends_the_command_with_one_line(secured: Secured) -> None:
    """The validator's user may not join the ingest group (nor write its dead letters)."""
    await secured.migrate()
    env = {**secured.kafka_env("validator"), "DATABASE_URL": secured.database_url("validator")}
    code, out = await cie(env, "consume")
    line = failure(out)
    assert code == 1 and "authoriz" in line["error"].lower(), line



async def test_the_scheduler_and_the_notifier_run_as_their_own_users(
    secured: Secured, tmp_path: Path
) -> None:
    """`scheduler` publishes a due task's run and the event of a task it disables (Kafka ACLs:
    write optimization-tasks and improvement-events), as a login in cie_scheduler; `notifier`
    posts that event, as a login in cie_notifier."""
    await secured.migrate()
    code, out = await cie(secured.kafka_env("admin"), "topics", "ensure", "--partitions", "2")
    assert code == 0, out
    due, failing = uuid.uuid4(), uuid.uuid4()
    owner = await asyncpg.connect(secured.database_url("cie_owner"))
    try:  # the tasks and events of this test alone (the module's demo wrote others)
        await owner.execute("DELETE FROM optimization_queue; DELETE FROM improvement_events")
        await owner.execute(
            """INSERT INTO optimization_queue (task_id, task_type, component_id, frequency,
                   next_run_at, status, consecutive_failures, config)
               VALUES ($1, 'retrain', 'dir', 'daily', now() - interval '1 minute', 'pending',
                       0, '{}'), ($2, 'retrain', 'dir', 'daily', now(), 'failed', 9, '{}')""",
            due, failing)
        tasks_before = await committed_records(secured.kafka, "optimization-tasks")
        events_before = await committed_records(secured.kafka, "improvement-events")
        scheduler = {**secured.kafka_env("scheduler"),
                     "DATABASE_URL": secured.database_url("scheduler"),
                     "CIE_SCHEDULER_POLL_MS": "200"}
        async def states() -> list[tuple[str, bool]]:
            return [tuple(row) for row in await owner.fetch(
                "SELECT status, enabled FROM optimization_queue ORDER BY task_id = $1 DESC",
                due)]

        async with running(scheduler, "schedule", tmp_path / "schedule.log"):
            settled = await eventually(states, [("running", True), ("failed", False)])
        assert settled == [("running", True), ("failed", False)], (
            (tmp_path / "schedule.log").read_text()[-2000:])
        assert await committed_records(secured.kafka, "optimization-tasks") == tasks_before + 1
        assert await committed_records(secured.kafka, "improvement-events") == (
            events_before + 1)  # the optimization_disabled event

        discord = FakeDiscord()
        webhook = discord.start()
        try:
            code, out = await cie({"DATABASE_URL": secured.database_url("notifier"),
                                   "CIE_DISCORD_WEBHOOK_URL": webhook}, "notify", "--once")
        finally:
            discord.stop()
        assert code == 0, out
        [message] = discord.messages
        assert message.payload["embeds"][0]["title"] == "optimization disabled: dir"
        assert await owner.fetchval(
            "SELECT notification_message_id FROM improvement_events") == message.message_id
    finally:
        await owner.execute("DELETE FROM optimization_queue; DELETE FROM improvement_events")
        await owner.close()
    logs = out + (tmp_path / "schedule.log").read_text()
    assert not any(secret in logs for secret in secured.secrets())


async def test_no_password_on_a_command_line_or_in_a_file_others_may_read(
    secured: Secured, command_lines: CommandLines,
) -> None:
    """Making the SCRAM users, the broker's configuration and the database logins never puts a
    password in a command's arguments (every user of the machine reads those: ps,
    /proc/*/cmdline), nor in a file anyone but its owner may read."""
    assert any("StorageTool format" in line for line in command_lines.seen)  # it watched
    leaked = [line for line in command_lines.seen
              for secret in secured.secrets() if secret in line]
    assert leaked == []
    for path in (secured.kafka.root / "server.properties", *secured.tls.rglob("*")):
        assert path.stat().st_mode & 0o077 == 0 or path.suffix == ".crt", path
