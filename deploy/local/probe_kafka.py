"""Readiness probe for the local broker: a real client must fetch cluster metadata.

Usage: probe_kafka.py HOST:PORT TIMEOUT_SECONDS  (exit 0 when ready, 1 on timeout)
"""

import asyncio
import logging
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def ready(bootstrap: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
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
    ok = asyncio.run(ready(bootstrap, time.monotonic() + timeout))
    if not ok:
        print(f"kafka at {bootstrap} not ready after {timeout:.0f}s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
