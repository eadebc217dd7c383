"""`cie dlq show` prints what producers chose (keys, and reasons quoting their messages):
control characters are escaped, so no escape sequence reaches the operator's terminal."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import TopicPartition

from consumers.ingest.replay import Letter, printable


def test_printable_escapes_control_characters_and_keeps_the_rest() -> None:
    assert printable("price 101.5 for AAPL") == "price 101.5 for AAPL"
    assert printable("café 東京") == "café 東京"
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("\u202eevil") == "\\u202eevil"  # a right-to-left override


def test_a_letters_line_has_no_control_character() -> None:
    letter = Letter(dlq=TopicPartition("fills.dlq", 0), offset=7,
                    dead_lettered_at=datetime(2026, 1, 2, tzinfo=UTC),
                    source="fills\x1b[2J", source_partition=1, source_offset=2,
                    error_class="Decode\x07Error", reason="bad \x1b]0;title\x07",
                    key=b"k\x1b[1m", value=b"{}", headers=[], cut=False)
    line = letter.line()
    assert line.isprintable()
    assert "key=k\\x1b[1m" in line and "bad \\x1b]0;title\\x07" in line
