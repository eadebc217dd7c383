"""The restore drill (bench/restore_drill.py) in a small form, on each schema path: WAL
archived and a base backup taken with barman-cloud to the stack's S3 server, a point-in-time
restore into a new cluster, which must hold exactly the rows (counts and checksums) of the
noted time, and none written after it. The 1 GB figures come from
`deploy/local/stack.sh restore-drill`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.stack import Bucket, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from restore_drill import drill


@pytest.mark.parametrize("path", ["plain", "timescaledb"])
async def test_a_point_in_time_restore_holds_what_was_there_then(
    stack: Stack, bucket: Bucket, path: str,
) -> None:
    if path == "timescaledb" and not stack.timescaledb:
        pytest.skip("TimescaleDB is not installed in the local PostgreSQL: TimescaleDB path "
                    "not tested")
    assert os.environ.get("CIE_BARMAN_BIN"), "CIE_BARMAN_BIN not set: eval $(stack.sh env)"
    report = await drill(bucket.name, size_mb=8, timescaledb=path == "timescaledb")
    # the target time's rows: 1000 + 500 trades (the 300 after it are not there), all filler
    assert report.tables["trades"][0] == 1500
    assert report.tables["filler"][0] == 8 * 1024 * 1024 // 256
    assert report.backup_seconds > 0 and report.restore_seconds > 0
