"""The chaos scenario at full size: 200,000+ events, 1 % poison, 5 SIGKILLs, a PostgreSQL
restart, a broker restart and a member joining and leaving during a database outage.

    deploy/local/stack.sh up      # for the Kafka jars; the scenario runs its own servers
    .venv/bin/python bench/chaos.py [--symbols 50] [--minutes 2400] [--kills 5]
        [--seconds 150] [--timescaledb]

What it does and checks is in tests/support/chaos.py; CI runs a short form (tests/integration/
test_chaos.py). Prints the report as JSON; exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support.chaos

from tests.support.chaos import Plan, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--minutes", type=int, default=2400)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=150.0, help="production time")
    parser.add_argument("--timescaledb", action="store_true")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the faults are on purpose
    plan = Plan(symbols=args.symbols, minutes=args.minutes, kills=args.kills,
                produce_seconds=args.seconds, timescaledb=args.timescaledb)
    with tempfile.TemporaryDirectory(prefix="cie-chaos-") as workdir:
        report = asyncio.run(run(plan, Path(workdir)))
    print(json.dumps({"plan": dataclasses.asdict(plan), **dataclasses.asdict(report)}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
