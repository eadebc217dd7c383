"""A disposable Kafka broker of a test's own (KRaft, the local stack's jars, its own ports and
data directory), for tests that stop, kill or restart the broker: the shared stack's broker
serves every other test meanwhile. Given a TLS directory (deploy/local/secure.sh certs), it is
secured exactly as `stack.sh up --secure` secures the stack's broker: SASL_SSL with SCRAM
users, and ACLs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from consumers.ingest.kafka import client_options
from consumers.platform.settings import load_settings
from tests.support.ports import PortTaken, free_port, on_free_port, taken
from tests.support.stack import REPO

CONFIG = REPO / "deploy" / "local" / "kafka"
SECURE = REPO / "deploy" / "local" / "secure.sh"


def secure_sh(*args: str) -> str:
    """Run a step of deploy/local/secure.sh; its output."""
    return subprocess.run([str(SECURE), *args], check=True, capture_output=True, text=True,
                          timeout=180).stdout


def _libs() -> Path:
    state = Path(os.environ.get("CIE_STACK_DIR", REPO / ".stack"))
    libs = state / "kafka" / "libs"
    if not any(libs.glob("kafka_*.jar")):
        raise RuntimeError(f"no Kafka jars in {libs}: run deploy/local/stack.sh up first")
    return libs


class BrokerExited(RuntimeError):
    """The broker process ended before it answered."""


class PrivateKafka:
    def __init__(self, *, tls: Path | None = None) -> None:
        self.tls = tls  # secured (SASL_SSL, SCRAM, ACLs) with this secure.sh certs directory
        self.root = Path(tempfile.mkdtemp(prefix="cie-kafka-"))
        self.port = self.controller_port = 0  # picked at the first start
        self._proc: subprocess.Popen[bytes] | None = None
        self._java = ["java", "-Xms64m", "-Xmx384m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                      f"-Dlog4j2.configurationFile={CONFIG / 'log4j2.yaml'}",
                      "-cp", f"{_libs()}/*"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _configure(self) -> Path:
        text = (CONFIG / "server.properties").read_text()
        if self.tls:
            text += secure_sh("kafka-config", str(self.tls))
        text = text.replace("19092", str(self.port)).replace("19093", str(self.controller_port))
        conf = self.root / "server.properties"
        conf.unlink(missing_ok=True)
        conf.touch(mode=0o600)  # secured, it holds the broker's own password
        conf.write_text(text + f"\nlog.dirs={self.root / 'data'}\n")
        return conf

    async def start(self, timeout: float = 90) -> None:
        """The first start picks the ports (and formats the log directory for them); a
        restart keeps both."""
        if self.port:
            await self._start(timeout)
        else:
            await on_free_port(lambda port: self._first_start(port, timeout))

    async def _first_start(self, port: int, timeout: float) -> None:
        self.port, self.controller_port = port, free_port()
        shutil.rmtree(self.root / "data", ignore_errors=True)
        (self.root / "kafka.log").unlink(missing_ok=True)
        conf = self._configure()
        subprocess.run(  # noqa: ASYNC221 - once, before the broker exists
            [*self._java, "kafka.tools.StorageTool", "format", "--standalone",
             "-t", str(uuid.uuid4()).replace("-", "")[:22], "-c", str(conf),
             *(secure_sh("kafka-format-args", str(self.tls)).split() if self.tls else [])],
            check=True, capture_output=True, timeout=120)
        try:
            await self._start(timeout)
            if self.tls:
                secure_sh("kafka-acls", self.bootstrap, str(self.tls))
        except BrokerExited:
            if taken((self.root / "kafka.log").read_text(errors="replace")):
                raise PortTaken(port) from None
            raise

    async def _start(self, timeout: float) -> None:
        conf = self.root / "server.properties"
        with (self.root / "kafka.log").open("ab") as log:  # the broker keeps its own copy
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - a long-running server
                [*self._java, "kafka.Kafka", str(conf)], stdout=log, stderr=log,
                start_new_session=True)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float) -> None:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise BrokerExited(f"see {self.root / 'kafka.log'}")
                admin = AIOKafkaAdminClient(**self.client_options(), request_timeout_ms=3000)
                try:
                    await admin.start()
                    await admin.list_topics()
                    return
                except Exception:
                    await asyncio.sleep(0.5)
                finally:
                    await admin.close()
            raise TimeoutError(f"private Kafka not ready within {timeout}s")
        finally:
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)

    def user_env(self, user: str, *, ca: Path | None = None,
                 password_file: Path | None = None) -> dict[str, str]:
        """The Kafka settings `cie` needs to reach this broker as ``user`` (a secured broker's
        SCRAM user; the password as a file, the Kubernetes Secret way)."""
        if not self.tls:
            return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD_FILE": str(password_file or self.tls / "passwords" / user),
                "KAFKA_SSL_CAFILE": str(ca or self.tls / "ca.crt")}

    def client_options(self) -> dict[str, Any]:
        """aiokafka options for the broker's super user, wired as the project wires them."""
        return client_options(load_settings(self.user_env("admin"), needs=("kafka",)))

    async def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    async def destroy(self) -> None:
        await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
