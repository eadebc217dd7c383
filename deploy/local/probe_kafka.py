"""Readiness probe for the local broker: a real client must fetch cluster metadata.

Usage: probe_kafka.py HOST:PORT TIMEOUT_SECONDS  (exit 0 when ready, 1 on timeout)
The client is the project's own, with the Kafka security settings of the environment
(KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CAFILE: the secured stack's admin).
"""

import asyncio
import logging
import os
import sys
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from consumers.ingest.kafka import client_options
from consumers.platform.settings import load_settings


async def ready(options: dict[str, Any], deadline: float) -> bool:
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**options, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    return False


def main() -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "not yet" is expected here
    bootstrap, timeout = sys.argv[1], float(sys.argv[2])
    settings = load_settings({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
                             needs=("kafka",))
    ok = asyncio.run(ready(client_options(settings), time.monotonic() + timeout))
    if not ok:
        print(f"kafka at {bootstrap} not ready after {timeout:.0f}s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
