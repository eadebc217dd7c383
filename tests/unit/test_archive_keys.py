"""What a restore takes from a bucket's listing: only keys of the archive's layout. A key is
the bucket writer's to choose, and a restore writes each part at its key under --into."""

from __future__ import annotations

import pytest

from consumers.archive.archiver import ArchiveError, month_prefix, part_number

PREFIX = "trade_outcomes/year=2020/month=03/"


@pytest.mark.parametrize("key, number", [
    (PREFIX + "part-00000.parquet", 0),  # before migration 20
    (PREFIX + "part-00012-0123456789abcdef.parquet", 12),
])
def test_keys_of_the_layout_name_their_part(key: str, number: int) -> None:
    assert part_number(PREFIX, key) == number


@pytest.mark.parametrize("key", [
    PREFIX + "../../../../etc/part-00000.parquet",
    PREFIX + "../month=04/part-00000.parquet",
    PREFIX + "sub/part-00000.parquet",
    PREFIX + "/part-00000.parquet",
    PREFIX + "part-00000-0123456789abcdef.parquet/../../x.parquet",
    PREFIX + "part-0000.parquet",
    PREFIX + "part-00000-0123456789ABCDEF.parquet",
    "trade_fills/year=2020/month=03/part-00000.parquet",
    "/" + PREFIX + "part-00000.parquet",
])
def test_any_other_key_is_refused(key: str) -> None:
    with pytest.raises(ArchiveError, match="not a part of"):
        part_number(PREFIX, key)


def test_the_prefix_is_the_months() -> None:
    from datetime import date

    assert month_prefix("trade_outcomes", date(2020, 3, 1)) == PREFIX
