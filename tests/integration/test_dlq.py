"""`cie dlq show` and `cie dlq replay` end to end: a fill refused because its opening fill
was late lands once replayed after the fix, exactly once, with its original key, value and
headers; other classes and repeated runs replay nothing."""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher

from consumers.ingest import replay
from consumers.ingest.replay import REPLAYED_FROM
from consumers.platform.settings import Settings
from consumers.producer import encode
from tests.support.builders import fill as build_fill
from tests.support.cie import cie_environment
from tests.support.harness import PARTITIONS, Ingest, counter, row_of
from tests.support.stack import NewTopics, Stack
from tests.support.topic_reading import read_to_end

fill = partial(build_fill, commission="0.5")


async def cie(ingest: Ingest, *args: str, status: int = 0) -> str:
    """``cie *args`` on the test's topics, exiting with ``status``: what it printed (its
    logs, on stderr, too when it failed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers", *args,
        env=cie_environment({**ingest.environment, "CIE_LOG_FORMAT": "json"}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert await proc.wait() == status, err.decode()[-2000:]
    return out.decode() + (err.decode() if status else "")


async def last_source_message(ingest: Ingest, trade: uuid.UUID) -> Any:
    """The newest message of the trade on the fills topic (read to the end: a transaction's
    commit marker, not a record, may hold the last offset)."""
    partitions = [TopicPartition(ingest.topic("fills"), p) for p in range(PARTITIONS)]
    records = await read_to_end(ingest.settings.kafka_bootstrap_servers, partitions)
    return [r for r in records if r.key == str(trade).encode()][-1]


async def test_show_then_replay_a_fixed_dead_letter_exactly_once(ingest: Ingest) -> None:
    url = ingest.settings.database_url
    trade = uuid.uuid4()
    opening, late_opening = fill(trade, "BUY", 10, "100", 0), fill(trade, "BUY", 5, "103", 1)
    closing = fill(trade, "SELL", 15, "104", 5)
    await ingest.send([opening])
    await ingest.drained("fills", 1)
    # the closing fill overtakes the second opening one: it would flip the position
    await ingest.send_raw("fills", [encode(closing)], key=str(trade).encode(),
                          headers=[("traceparent", b"00-77-01")])
    await ingest.send_raw("fills", [b'{"fill_id": "not json'], key=b"junk")
    await ingest.drained("fills", 3)

    shown = await cie(ingest, "dlq", "show", "fills")
    lines = shown.splitlines()
    assert lines[-1] == "2 dead letters"
    [ledger] = [line for line in lines if "LedgerError" in line]
    assert f"from {ingest.topic('fills')}[" in ledger and "]@" in ledger and "flip" in ledger
    assert f"key={trade}" in ledger
    only_ledger = await cie(ingest, "dlq", "show", "fills", "--class", "LedgerError")
    assert only_ledger.splitlines()[-1] == "1 dead letters"

    await ingest.send([late_opening])  # the fix: the missing opening fill is in
    await ingest.drained("fills", 4)
    dry = await cie(ingest, "dlq", "replay", "fills", "--class", "LedgerError", "--dry-run")
    assert dry.splitlines()[-1].startswith("would replay 1;")
    outcome = row_of(url, "SELECT quantity, outcome_type FROM trade_outcomes WHERE trade_id = $1",
                     trade)
    assert await outcome() == (15, "OPEN")  # a dry run sends nothing

    # this filter never replayed: no position, so it will not start from the first letter
    # on its own (as it would after its position expired)
    refused = await cie(ingest, "dlq", "replay", "fills", "--class", "LedgerError", status=1)
    assert "no replay position" in refused and "--from-beginning" in refused
    assert await outcome() == (15, "OPEN")
    done = await cie(ingest, "dlq", "replay", "fills", "--class", "LedgerError",
                     "--from-beginning")
    assert done.splitlines()[-1].startswith("replayed 1; skipped 0 cut to fit and 1 of other")
    await ingest.drained("fills", 5)
    # entry (10 x 100 + 5 x 103) / 15 = 101; exit 104; gross 3 x 15 = 45; commission 1.5
    closed = row_of(url, "SELECT quantity, entry_price, exit_price, net_pnl, outcome_type "
                    "FROM trade_outcomes WHERE trade_id = $1", trade)
    assert await closed() == (15, Decimal("101"), Decimal("104"), Decimal("43.5"), "WIN")
    replayed = await last_source_message(ingest, trade)
    assert replayed.value == encode(closing)
    headers = dict(replayed.headers)
    assert headers["traceparent"] == b"00-77-01"
    assert headers[REPLAYED_FROM].startswith(f"{ingest.topic('fills')}.dlq:".encode())
    assert not [name for name in headers if name.startswith("dlq.")]

    again = await cie(ingest, "dlq", "replay", "fills", "--class", "LedgerError",
                      "--from-beginning")  # the position wins: never twice
    assert again.splitlines()[-1].startswith("replayed 0;")
    assert await ingest.committed("fills") == 5
    assert await counter(url, "SELECT count(*) FROM trade_fills WHERE trade_id = $1", trade)() == 3
    assert len(await ingest.all_dead_letters("fills")) == 2  # the replay landed: no new letter


async def test_letters_are_read_from_the_start_when_the_broker_answers_a_reset_late(
    stack: Stack, new_topic: NewTopics, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Assigning partitions starts aiokafka's default offset reset ("latest") in the
    background, and aiokafka applies a reset's answer to whichever reset is awaited when the
    answer lands. A busy broker answering that reset late (here each reset's answer is held
    0.5 s; the requests are real) must not put `cie dlq show` at the end of the topic: CI once
    listed 0 dead letters of 2 that way."""
    topic = await new_topic("dlq", partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b"letter %d" % n)
    finally:
        await producer.stop()
    ask = Fetcher._proc_offset_request
    held: list[int] = []

    async def late_reset_answer(fetcher: Fetcher, node_id: int, topic_data: Any) -> Any:
        answer = await ask(fetcher, node_id, topic_data)
        if sys._getframe(1).f_code.co_name == "_update_fetch_positions":  # a reset, not ours
            held.append(node_id)
            await asyncio.sleep(0.5)
        return answer

    monkeypatch.setattr(Fetcher, "_proc_offset_request", late_reset_answer)
    read = [letter.value async for letter in replay.letters(
        Settings(kafka_bootstrap_servers=stack.kafka), topic)]
    assert held, "no reset answer was held: aiokafka's fetcher changed, and this test with it"
    assert read == [b"letter 0", b"letter 1", b"letter 2"]


async def test_a_letter_naming_another_topic_is_refused_not_replayed_there(
    ingest: Ingest,
) -> None:
    """Whoever may write to a dead-letter topic (the ingest login may) could plant a letter
    whose header names another topic: the operator's replay would publish it there with the
    operator's rights. A replay sends only to the topic the dead-letter topic belongs to."""
    from consumers.ingest.kafka import (
        DLQ_ERROR_CLASS,
        DLQ_OFFSET,
        DLQ_PARTITION,
        DLQ_REASON,
        DLQ_TOPIC,
    )

    target = ingest.topic("improvements")
    planted = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=ingest.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{ingest.topic('fills')}.dlq", key=planted, value=b'{"event_type": "x"}',
            headers=[(DLQ_TOPIC, target.encode()), (DLQ_PARTITION, b"0"), (DLQ_OFFSET, b"1"),
                     (DLQ_ERROR_CLASS, b"LedgerError"),
                     (DLQ_REASON, b"flip \x1b]0;pwned\x07\x1b[2J")])
    finally:
        await producer.stop()

    shown = await cie(ingest, "dlq", "show", "fills")
    assert "\x1b" not in shown and "\x07" not in shown  # escaped, not sent to the terminal
    assert "flip \\x1b]0;pwned\\x07\\x1b[2J" in shown
    done = await cie(ingest, "dlq", "replay", "fills", "--from-beginning")
    assert done.splitlines()[-1].startswith(
        "replayed 0; skipped 0 cut to fit and 0 of other classes; refused 1 naming another")
    partitions = [TopicPartition(target, p) for p in range(PARTITIONS)]
    records = await read_to_end(ingest.settings.kafka_bootstrap_servers, partitions)
    assert [r for r in records if r.key == planted] == []
