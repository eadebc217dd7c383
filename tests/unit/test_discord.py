"""The message an improvement event becomes: within Discord's embed limits, mentions off,
the event id in the footer, and colours that say which way it went."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.improvement.discord import BAD, FIELD_LIMIT, GOOD, NEUTRAL, message

EVENT_ID = uuid.UUID("5f0c8a52-9d1b-4c1e-9a55-2b7f6f3f0a11")


def event(**columns: Any) -> dict[str, Any]:
    return {"event_id": EVENT_ID, "event_type": "model_promoted", "component_type": "model",
            "component_id": "direction", "old_value": None, "new_value": None,
            "event_timestamp": datetime(2026, 12, 1, 14, 30, tzinfo=UTC), **columns}


def embed_of(**columns: Any) -> dict[str, Any]:
    payload = message(event(**columns))
    assert payload["allowed_mentions"] == {"parse": []}
    [embed] = payload["embeds"]
    return embed  # type: ignore[no-any-return]


def test_the_footer_names_the_event_and_the_time_is_the_event_s() -> None:
    embed = embed_of(automated=False)
    assert embed["footer"]["text"] == f"event {EVENT_ID} · manual"
    assert embed["timestamp"] == "2026-12-01T14:30:00+00:00"


def test_versions_are_shown_as_a_change_and_other_values_as_json() -> None:
    fields = {f["name"]: f["value"] for f in embed_of(
        old_value={"version": "v1"}, new_value={"version": "v2"})["fields"]}
    assert fields["Change"] == "v1 → v2"
    fields = {f["name"]: f["value"] for f in embed_of(
        old_value={"enabled": True}, new_value=None)["fields"]}
    assert fields["Change"] == '{"enabled":true} → -'


def test_only_figures_both_sides_have_are_compared_headline_ones_first() -> None:
    fields = [f["name"] for f in embed_of(
        performance_before={"sharpe_ratio": 1, "trades": 10, "by_day": [1, 2]},
        performance_after={"sharpe_ratio": 2, "win_rate": 0.5, "by_day": [3]})["fields"]]
    assert fields == ["Component", "Change", "sharpe_ratio"]
    figures = {f"figure_{n}": n for n in range(12)} | {"win_rate": 0.5, "net_pnl": 10}
    fields = [f["name"] for f in embed_of(performance_before=figures,
                                          performance_after=figures)["fields"]]
    assert fields[2:] == ["win_rate", "net_pnl", *(f"figure_{n}" for n in range(6))]


def test_an_ab_test_is_named_by_its_name_not_its_id() -> None:
    embed = embed_of(event_type="ab_test_promoted", component_id=str(EVENT_ID),
                     improvement_metrics={"test": "v1 vs v2", "improvement_percent": 12.5})
    assert embed["title"] == "ab test promoted: v1 vs v2"


def test_colours_follow_the_event() -> None:
    assert embed_of(event_type="ab_test_rollback")["color"] == BAD
    assert embed_of(event_type="optimization_disabled")["color"] == BAD
    assert embed_of(event_type="ab_test_promoted")["color"] == GOOD
    assert embed_of(event_type="config_changed")["color"] == NEUTRAL


def test_long_text_is_cut_to_discord_s_limits() -> None:
    huge = {f"figure_{n}": "x" * 2000 for n in range(40)}
    embed = embed_of(performance_before=huge, performance_after=huge, component_id="c" * 300)
    assert len(embed["title"]) <= 256 and embed["title"].endswith("…")
    assert len(embed["fields"]) <= 25
    assert all(len(f["value"]) <= FIELD_LIMIT for f in embed["fields"])
    text = embed["title"] + embed["footer"]["text"] + "".join(
        f["name"] + f["value"] for f in embed["fields"])
    assert len(text) <= 6000


def test_the_demo_sink_shows_what_it_received_and_says_when_too_little_came(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`stack.sh run` prints the demo's notifications with the sink's --show: the message
    lines only, waiting (bounded) for as many as the demo posts."""
    from webhook_sink import show

    log = tmp_path / "webhook-sink.log"
    log.write_text('{"listening": "http://127.0.0.1:1/api"}\n'
                   '{"message_id": "1", "title": "params optimized"}\n'
                   '{"message_id": "2", "title": "ab test rejected"}\n')
    assert show(str(log), at_least=2, within=0) == 0
    assert capsys.readouterr().out.splitlines() == [
        '{"message_id": "1", "title": "params optimized"}',
        '{"message_id": "2", "title": "ab test rejected"}']
    assert show(str(log), at_least=3, within=0.2) == 1
    assert show(str(tmp_path / "never-written.log"), at_least=1, within=0) == 1
